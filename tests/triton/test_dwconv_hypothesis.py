"""Hypothesis fuzzing of the depthwise-conv op (dwconv_hadamard) in every conv form, forward
and backward, against float64 autograd of its definition (F.conv2d, by the naive twin).

Random batch, grid, channels, taps (odd and even), centred, causal or any padding, every
optional operand, both layouts of x (channel-major, as the dense maps write it for the
tensor-core forms, and token-major), fp32 and fp16, atomic or deterministic sums: row tiles
that span images, stripes that cross the grid's edge and masked channels all come up."""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler.verify.poison import nan_poisoned
from tests.helpers import generated_runtime

TOL = {torch.float32: 2e-4, torch.float16: 3e-2}  # relative to each result's largest value
OPERANDS = ("bias", "gate", "acc", "acc_scale", "scale", "in_bias")


@pytest.fixture(scope="module")
def runtime():
    return generated_runtime("padre3", 4, grid=(2, 3))


def _definition(m, x, weight, ops: dict, geometry: tuple, stores: tuple) -> tuple:
    """(z, o) in float64 from the naive twin: conv2d by definition, differentiable."""
    return m.naive_dwconv_hadamard(x, weight, ops["bias"], ops["gate"], ops["acc"],
                                   ops["acc_scale"], ops["scale"], *geometry, *stores,
                                   in_bias=ops["in_bias"])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(form=st.sampled_from(["direct", "toeplitz", "slab", "slab2"]), b=st.integers(1, 5),
       h=st.integers(1, 19), w=st.integers(1, 19), c=st.integers(1, 19),
       kh=st.sampled_from([1, 2, 3, 4, 5]), kw=st.sampled_from([1, 2, 3, 4, 7]),
       pads=st.tuples(st.sampled_from(["centred", "causal", "drawn"]), st.integers(0, 6),
                      st.integers(0, 6)),
       present=st.lists(st.booleans(), min_size=len(OPERANDS), max_size=len(OPERANDS)),
       stores=st.sampled_from([(True, False), (False, True), (True, True)]),
       channel_major=st.booleans(), half=st.booleans(), deterministic=st.booleans(),
       seed=st.integers(0, 99))
def test_conv_op_forward_and_backward_match_float64(runtime, form, b, h, w, c, kh, kw,
                                                    pads, present, stores, channel_major,
                                                    half, deterministic, seed) -> None:
    m = runtime
    dtype = torch.float16 if half else torch.float32
    gen = torch.Generator().manual_seed(seed)
    n = h * w
    x = (torch.randn(b, c, n, generator=gen).mT if channel_major
         else torch.randn(b, n, c, generator=gen)).to(dtype)
    weight = torch.randn(c, kh, kw, generator=gen) / (kh * kw) ** 0.5
    shapes = {"bias": (c,), "gate": (b, n, c), "acc": (b, n, c), "acc_scale": (c,),
              "scale": (c,), "in_bias": (c,)}
    ops = {k: torch.randn(shapes[k], generator=gen).to(dtype if len(shapes[k]) == 3
                                                          else torch.float32)
           if on else None for k, on in zip(OPERANDS, present, strict=True)}
    if ops["acc"] is None:
        ops["acc_scale"] = None  # it scales the accumulator
    kind, ph, pw = pads  # drawn: any padding from 0 (anti-causal) to k - 1 (causal)
    ph, pw = {"centred": (kh // 2, kw // 2), "causal": (kh - 1, kw - 1),
              "drawn": (min(ph, kh - 1), min(pw, kw - 1))}[kind]
    geometry = (h, w, ph, pw)
    args = (x, weight, *(ops[k] for k in OPERANDS[:5]))
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(deterministic)
        with mock.patch.dict(os.environ, {"PADRE_TRITON_CONV": form}), nan_poisoned():
            z, o, _ = m._dwconv_hadamard_impl(*args, *geometry, *stores,
                                              in_bias=ops["in_bias"])
            dz, do = (torch.randn(b, n, c, generator=gen).to(dtype) if s else None
                      for s in stores)
            grads = m._dwconv_hadamard_bwd_impl(*args, dz, do, *geometry,
                                                in_bias=ops["in_bias"])
    finally:
        torch.use_deterministic_algorithms(deterministic_before)

    # the definition in float64, and its gradients by autograd
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    ops64 = {k: None if t is None else t.detach().double().requires_grad_()
             for k, t in ops.items()}
    z64, o64 = _definition(m, x64, w64, ops64, geometry, stores)
    loss = sum(((r * g.double()).sum() for r, g, s in ((z64, dz, stores[0]),
                                                        (o64, do, stores[1])) if s),
               torch.zeros((), dtype=torch.float64))
    # _dwconv_hadamard_bwd_impl's order: (dx, dg, da, dw, db, ds, dsa, dbi)
    order = [("x", x64), ("gate", ops64["gate"]), ("acc", ops64["acc"]), ("weight", w64),
             ("bias", ops64["bias"]), ("scale", ops64["scale"]),
             ("acc_scale", ops64["acc_scale"]), ("in_bias", ops64["in_bias"])]
    wanted = [(label, t) for label, t in order if t is not None]
    refs = torch.autograd.grad(loss, [t for _, t in wanted], allow_unused=True)
    refs = dict(zip([label for label, _ in wanted], refs, strict=True))

    def close(label: str, got: torch.Tensor, want: torch.Tensor) -> None:
        assert got.shape == want.shape and got.isfinite().all(), label
        scale = want.abs().max().clamp_min(1e-6)
        err = float((got.double() - want).abs().max() / scale)
        assert err < TOL[dtype], (label, err)

    for label, got, want, stored in (("z", z, z64, stores[0]), ("o", o, o64, stores[1])):
        if stored:
            close(label, got, want.detach())
    for (label, _), got in zip(order, grads, strict=True):
        # the accumulator and the two scales reach only o: no gradient without do
        if label in refs and (do is not None or label not in ("acc", "scale", "acc_scale")):
            close("d" + label, got, refs[label])
        else:
            assert got.numel() == 0, label
