"""The CAOTE score kernel against the float64 loop twin, under NaN-poisoned outputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler.caote import kernel, naive
from padre_compiler.caote.scores import caote_from_weights
from padre_compiler.verify.poison import nan_poisoned

pytestmark = pytest.mark.skipif(kernel.triton is None, reason="Triton is not installed")


@settings(max_examples=20, deadline=None, derandomize=True)
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), g=st.integers(1, 3), t=st.integers(1, 70),
       d=st.integers(1, 20), fast=st.booleans(), half=st.booleans(), seed=st.integers(0, 999),
       sharpness=st.sampled_from([1.0, 30.0]))
def test_kernel_matches_float64_twin(b: int, hkv: int, g: int, t: int, d: int, fast: bool,
                                     half: bool, seed: int, sharpness: float) -> None:
    """sharpness 30: logit gaps of tens, one weight per head near or at 1 in fp32."""
    gen = torch.Generator().manual_seed(seed)
    weights = (torch.randn(b, hkv * g, t, generator=gen, dtype=torch.float64) * sharpness
               ).softmax(-1)
    values = torch.randn(b, hkv, t, d, generator=gen, dtype=torch.float64)
    dtype = torch.float16 if half else torch.float32
    w, v = weights.to(dtype), values.to(dtype)
    assert kernel.triton_runs_on(v)  # the interpreter is on in tests without a GPU
    with nan_poisoned():
        got = kernel.caote_scores_fused(w, v, fast=fast)
    # the loop twin, per query head, on the same rounded inputs: only arithmetic is measured
    ref = torch.tensor([[naive._caote_head(w[i, h].double().tolist(),
                                           v[i, naive._kv(h, hkv * g, hkv)].double().tolist(),
                                           fast) for h in range(hkv * g)] for i in range(b)],
                       dtype=torch.float64)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_wrong_formula_is_caught() -> None:
    """The check above can fail: scores without the 1/(1 - w) factor differ."""
    w = torch.tensor([[[0.7, 0.2, 0.1]]])
    v = torch.randn(1, 1, 3, 4)
    wrong = caote_from_weights(w, v) * (1 - w)
    assert not torch.allclose(kernel.caote_scores_fused(w, v), wrong)


@pytest.mark.parametrize(("w", "v"), [((1, 6, 40), (1, 4, 40, 16)),  # 6 heads on 4 KV heads
                                       ((1, 4, 40), (1, 2, 39, 16)),
                                       ((2, 4, 40), (1, 2, 40, 16))])
def test_heads_that_do_not_group_are_refused(w: tuple, v: tuple) -> None:
    """Query head h reads KV head h // G: with Hq not a multiple of Hkv the last read past
    the values (non-finite scores, silently)."""
    with pytest.raises(ValueError, match="Hq a multiple of Hkv"):
        kernel.caote_scores_fused(torch.rand(w), torch.randn(v))


@pytest.mark.parametrize("shape", [(1, 2, 0), (0, 2, 5), (1, 0, 5)])
def test_nothing_to_score_gives_an_empty_result(shape: tuple) -> None:
    """T = 0 had read v_m of no entry (a segfault); B = 0 and Hq = 0 launch nothing."""
    b, hq, t = shape
    got = kernel.caote_scores_fused(torch.rand(shape), torch.randn(b, 1 if hq else 0, t, 8))
    assert got.shape == shape and got.dtype == torch.float32


@pytest.mark.parametrize("fast", [False, True])
def test_eviction_uses_the_kernel_on_cuda_and_the_twin_elsewhere(fast: bool) -> None:
    from padre_compiler.caote.policy import VARIANTS
    from padre_compiler.caote.scores import caote_scores, fastcaote_scores

    gen = torch.Generator().manual_seed(3)
    base = torch.rand(1, 4, 33, generator=gen)
    values = torch.randn(1, 2, 33, 8, generator=gen)
    plain = (fastcaote_scores if fast else caote_scores)(base, values)
    got = VARIANTS["fastcaote" if fast else "caote"](base, values, "rss")
    assert torch.equal(got, plain)  # CPU tensors: the PyTorch twin, bit for bit
    if torch.cuda.is_available():
        gpu = VARIANTS["fastcaote" if fast else "caote"](base.cuda(), values.cuda(), "rss")
        assert torch.allclose(gpu.cpu(), plain, rtol=1e-5, atol=1e-6)
