"""Generated Triton kernels, run in the CPU interpreter, against the float64 reference.

Forward: compiled module (fp32, fp16) == the float64 reference interpreter on the same
(rounded) weights. Backward: gradients == float64 autograd of the torch backend (itself checked
against the reference in tests/test_pipeline_properties.py). Both kernel forms run: the direct
CUDA-core kernel and the tensor-core (banded Toeplitz) kernel. Shapes are tiny and awkward.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import padre_compiler as pc
from padre_compiler import dsl
from padre_compiler.backends.reference import random_params, run_graph
from padre_compiler.cli import codegen_path
from padre_compiler.compiler import generate, load_source
from padre_compiler.ir.ops import EvalContext
from padre_compiler.spec.loader import load_spec
from padre_compiler.verify.poison import nan_poisoned
from tests.strategies import specs

TOL = {torch.float32: 2e-5, torch.float16: 2e-2}


def _gated_sequence(causal: bool):
    """1-D maps: conv ⊙ gate accumulated into a per-channel weighted sum with another term."""
    x = dsl.tokens("sequence")
    k = 4 if causal else 3
    y1 = dsl.dwconv1d(dsl.dense(x, "b1", bias=True), "a1", kernel=k, causal=causal, bias=True)
    y2 = dsl.dense(x, "b2")
    z = dsl.dwconv1d(dsl.dense(y1, "c1"), "a2", kernel=k, causal=causal) * y2
    p = dsl.add(dsl.diagonal(y1, "w1"), dsl.diagonal(z, "w2"), dsl.diagonal(y2, "w3"))
    return dsl.spec(f"gated_{'causal' if causal else 'centred'}", layout="sequence",
                    output=dsl.dense(p, "proj"))


CASES = [  # (spec, dim, grid or tokens, batch)
    ("padre3", 5, (3, 5), 3),
    ("padre3", 4, (1, 1), 1),
    ("conv2former", 3, (4, 3), 1),
    ("hyena", 8, 7, 2),
    ("causal", 3, 9, 3),
    ("centred", 5, 1, 1),
    ("sima", 16, 7, 2),
    ("sima", 8, 1, 1),
    ("castling_vit", 16, 11, 2),
]


def _spec(name: str):
    return _gated_sequence(name == "causal") if name in ("causal", "centred") else load_spec(name)


def _build(name: str, dim: int, size, dtype, seed: int = 0):
    spec = _spec(name)
    grid = size if isinstance(size, tuple) else None
    tokens = size[0] * size[1] if grid else size
    module = pc.compile(spec, dim=dim, grid=grid, backend="triton")
    params = random_params(spec.param_decls(), dim, seed=seed)
    module.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    module = module.to(dtype)
    rounded = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    return spec, module, rounded, grid, tokens


@pytest.fixture(params=["direct", "toeplitz", "slab"])
def form(request, monkeypatch):
    monkeypatch.setenv("PADRE_TRITON_CONV", request.param)
    return request.param


def _with_forms(cases: list[tuple]) -> list[tuple]:
    """Each case with each conv form its module carries: a grid spec's 2-D maps every form, a
    sequence spec's 1-D convs the direct form alone (its module leaves the tensor-core form
    out, and runs the direct one whatever PADRE_TRITON_CONV says)."""
    return [(*case, form) for case in cases
            for form in (("direct", "toeplitz", "slab") if isinstance(case[2], tuple)
                         else ("direct",))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("name", "dim", "size", "batch", "conv"), _with_forms(CASES))
def test_forward_matches_float64_reference(name, dim, size, batch, conv, dtype,
                                           monkeypatch) -> None:
    monkeypatch.setenv("PADRE_TRITON_CONV", conv)
    spec, module, params, grid, tokens = _build(name, dim, size, dtype)
    x = torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad(), nan_poisoned():  # outputs allocated as NaN: every element written
        out = module(x)
    assert out.dtype == dtype and out.shape == x.shape and out.isfinite().all()
    ref = run_graph(spec.graph(), x.double().numpy(), params, EvalContext(grid=grid))
    err = np.abs(out.double().numpy() - ref).max() / max(np.abs(ref).max(), 1e-12)
    assert err < TOL[dtype], err


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("name", "dim", "size", "batch", "conv"), _with_forms(
    [("padre3", 5, (3, 5), 1), CASES[2], CASES[3], CASES[4], CASES[6]]))
def test_backward_matches_float64_autograd(name, dim, size, batch, conv, dtype,
                                           monkeypatch) -> None:
    monkeypatch.setenv("PADRE_TRITON_CONV", conv)
    spec, module, params, grid, tokens = _build(name, dim, size, dtype)
    oracle = pc.compile(spec, dim=dim, grid=grid).double()
    oracle.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    gen = torch.Generator().manual_seed(2)
    x64 = torch.randn(batch, tokens, dim, generator=gen, dtype=torch.float64)
    g64 = torch.randn(batch, tokens, dim, generator=gen, dtype=torch.float64)
    x = x64.to(dtype).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad((module(x) * g64.to(dtype)).sum(), [x, *module.parameters()])
    want = torch.autograd.grad((oracle(x64) * g64).sum(), [x64, *oracle.parameters()])
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for label, got, ref in zip(["x", *names], grads, want, strict=True):
        assert got.dtype == dtype
        err = (got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)
        assert err < tol, (label, float(err))


@settings(max_examples=12)
@given(specs(max_degree=3, allow_norm=False))
def test_random_specs_match_reference_on_triton(case) -> None:
    """Random specs (every operator, 1 token, non-square grids) through --backend triton."""
    result = generate(case.spec, dim=case.dim, grid=case.grid, backend="triton",
                      tokens=case.tokens)
    cls = getattr(load_source(result.source, case.spec.name), result.class_name)
    module = cls(case.dim, case.grid) if case.grid else cls(case.dim)
    params = random_params(case.spec.param_decls(), case.dim, seed=3)
    module.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()})
    rounded = {k: v.double().numpy() for k, v in module.state_dict().items()}
    x = torch.randn(2, case.tokens, case.dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = module(x).double().numpy()
    ref = run_graph(case.spec.graph(), x.double().numpy(), rounded, EvalContext(grid=case.grid))
    assert np.abs(out - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0)


def _kernels_module():
    module = pc.compile("padre3", dim=4, grid=(2, 3), backend="triton")
    return __import__("sys").modules[type(module).__module__]


FUSED = [("padre3", (3, 4)), ("conv2former", (3, 4)), ("hyena", None), ("sima", None),
         ("castling_vit", None), ("mamba_lti", None)]


EMPTY = [(name, grid, shape) for name, grid in FUSED
         for shape in [(0, 12, 16)] + ([(2, 0, 16)] if grid is None else [])]


@pytest.mark.parametrize(("name", "grid", "shape"), EMPTY,
                         ids=[f"{n}-{'no-tokens' if s[1] == 0 else 'no-batch'}"
                              for n, _, s in EMPTY])
def test_an_empty_batch_or_sequence_runs_forward_and_backward(name: str, grid, shape) -> None:
    """A batch of 0 or a sequence of 0 tokens (FFTs refuse no points; a view of -1 over 0
    elements is open): the empty output, and every parameter's gradient zero, as the torch
    backend's (the ops' empty gradients were taken for absent ones: None)."""
    module = pc.compile(name, dim=16, grid=grid, backend="triton")
    x = torch.randn(*shape, requires_grad=True)
    y = module(x)
    y.sum().backward()
    assert y.shape == x.grad.shape == shape
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())


class _NoGradient(torch.autograd.Function):
    """The identity, passing back an undefined gradient (as a detached branch does)."""

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, dy):
        return None


@pytest.mark.parametrize(("name", "grid"), FUSED, ids=[n for n, _ in FUSED])
def test_an_undefined_output_gradient_sends_none_back(name: str, grid) -> None:
    """The module's output gradient undefined (None, not materialised as zeros): no
    gradient reaches the input or a parameter through the module (castling_vit's backward
    read its forward output as dY and sent 6.7 back; sima's, hyena's and mamba_lti's
    crashed)."""
    module = pc.compile(name, dim=16, grid=grid, backend="triton")
    x = torch.randn(2, 12, 16, requires_grad=True)
    (x.sum() + _NoGradient.apply(module(x)).sum()).backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert all(p.grad is None or not p.grad.any() for p in module.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_kernel_writes_every_output_element(dtype, form) -> None:
    """Outputs poisoned with NaN before the launch: none may survive (odd C, H, W)."""
    gen = lambda *s: torch.randn(*s, generator=torch.Generator().manual_seed(sum(s)))  # noqa: E731
    m = _kernels_module()
    b, h, w, c, k = 2, 5, 7, 19, 3
    x, gate, acc = (gen(b, h * w, c + i).to(dtype)[..., :c] for i in range(3))  # strided views
    weight, bias, scale, acc_scale = gen(c, k, k), gen(c), gen(c), gen(c + 1)[:c]
    z = torch.full((b, h * w, c), float("nan"), dtype=dtype)
    o = torch.full((b, h * w, c), float("nan"), dtype=dtype)
    m.dwconv_hadamard_launch(x, weight, bias, gate, acc, acc_scale, scale, h, w, 1, 1, z, o)
    assert not z.isnan().any() and not o.isnan().any()
    want_z, want_o = m.naive_dwconv_hadamard(x.float(), weight, bias, gate.float(), acc.float(),
                                             acc_scale, scale, h, w, 1, 1, True, True)
    tol = TOL[dtype] * 10
    assert torch.allclose(z.float(), want_z, atol=tol, rtol=tol)
    assert torch.allclose(o.float(), want_o, atol=tol, rtol=tol)


@pytest.mark.parametrize("layout", ["channel-slices", "token-first", "one-token"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_row_tiles_spanning_many_images_read_each_row_from_its_own(dtype, layout, form) -> None:
    """The Toeplitz forward's and weight gradient's row tiles run over the images' rows
    stacked (16 rows here: 7 images of 3 rows, so a tile holds parts of up to 6 images and
    the last tile rows past the last image): every row must read its own image alone,
    through the strip rows, the input bias's in-grid tap counts, the gate and accumulator
    (views of wider tensors' channels, or [N, B, C] tensors transposed, whose batch stride is
    not N token strides: token_rows copies those; one-token images, whose [B, 1, C] layouts
    torch calls contiguous whatever their token stride: token_rows gives them the batch
    stride), the stored outputs, and the weight gradient's du rows."""
    m = _kernels_module()
    gen = torch.Generator().manual_seed(17)
    b, h, w, c, k = (7, 3, 6, 5, 5) if layout != "one-token" else (7, 1, 1, 5, 5)
    x = torch.randn(b, c, h * w, generator=gen).mT.to(dtype)  # channel-major
    if layout == "channel-slices":
        gate, acc = (torch.randn(b, h * w, c + 2, generator=gen).to(dtype)[..., :c]
                     for _ in range(2))
    elif layout == "token-first":
        gate, acc = (torch.randn(h * w, b, c, generator=gen).to(dtype).transpose(0, 1)
                     for _ in range(2))
    else:  # token strides 1 and B * C
        gate = torch.randn(b, c, 1, generator=gen).to(dtype).mT
        acc = torch.randn(1, b, c, generator=gen).to(dtype).transpose(0, 1)
    weight, bias, in_bias, scale, acc_scale = (torch.randn(*s, generator=gen) for s in
                                               ((c, k, k), (c,), (c,), (c,), (c,)))
    z, o = (torch.full((b, h * w, c), float("nan"), dtype=dtype) for _ in range(2))
    m.dwconv_hadamard_launch(x, weight, bias, gate, acc, acc_scale, scale, h, w, 2, 2, z, o,
                             in_bias=in_bias)
    want = m.naive_dwconv_hadamard(x.double(), weight.double(), bias.double(), gate.double(),
                                   acc.double(), acc_scale.double(), scale.double(), h, w, 2,
                                   2, True, True, in_bias=in_bias.double())
    for got, ref in zip((z, o), want, strict=True):
        torch.testing.assert_close(got.double(), ref, atol=TOL[dtype] * 20, rtol=TOL[dtype])
    du = torch.randn(b, c, h * w, generator=gen).mT.to(dtype)  # channel-major, as bwd writes it
    dw = torch.zeros(c, k, k)
    m.dwconv_toeplitz_wgrad_launch(x, du, dw, h, w, 2, 2)
    want = m._depthwise_weight_grad(x.double(), du.double(), k, k, h, w, 2, 2)
    torch.testing.assert_close(dw.double(), want, atol=TOL[dtype] * 20, rtol=TOL[dtype])


def test_causal_and_asymmetric_padding_match_naive_twin(form) -> None:
    m = _kernels_module()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 11, 6, generator=gen)
    weight = torch.randn(6, 1, 5, generator=gen)
    for pad in (0, 2, 4):  # causal (left = k - 1) is pad 4 on a 1 x N grid
        z = torch.empty_like(x)
        m.dwconv_hadamard_launch(x, weight, None, None, None, None, None, 1, 11, 0, pad, z, None)
        want = m.naive_dwconv_hadamard(x, weight, None, None, None, None, None, 1, 11, 0, pad,
                                       True, False)[0]
        assert torch.allclose(z, want, atol=1e-5)
    # a causal output never reads the future: changing x[t > 5] leaves y[:6] unchanged
    x2 = x.clone()
    x2[:, 6:] += 1.0
    y, y2 = (m.dwconv_hadamard(t, weight, None, None, None, None, None, 1, 11, 0, 4, True,
                               False)[0] for t in (x, x2))
    assert torch.equal(y[:, :6], y2[:, :6]) and not torch.equal(y[:, 6:], y2[:, 6:])


NAIVE_SCRIPT = """
import importlib.util, os, sys
os.environ.pop("TRITON_INTERPRET", None)
sys.modules["padre_compiler"] = None  # the generated file must not need the compiler
if {block}:
    sys.modules["triton"] = None  # as if Triton were not installed
def load(path):
    s = importlib.util.spec_from_file_location("m" + str(abs(hash(path))), path)
    m = importlib.util.module_from_spec(s); s.loader.exec_module(m); return m
m, t = load({fused!r}), load({plain!r})
import torch
calls, real = [], m.naive_dwconv_hadamard
m.naive_dwconv_hadamard = lambda *a: calls.append(1) or real(*a)
mod, ref = m.Padre3(4, (3, 2)), t.Padre3(4, (3, 2))
ref.load_state_dict(mod.state_dict())
x = torch.randn(2, 6, 4, requires_grad=True)
y = mod(x)
(gx,) = torch.autograd.grad(y.sum(), x)
(gr,) = torch.autograd.grad(ref(x).sum(), x)
assert calls and torch.allclose(y, ref(x), atol=1e-5) and torch.allclose(gx, gr, atol=1e-5)
assert (m.triton is None) == {block}
print("ok")
"""


@pytest.mark.parametrize("block", [False, True], ids=["no-interpreter", "no-triton"])
def test_naive_twin_runs_where_triton_cannot(block: bool) -> None:
    """CPU tensors without TRITON_INTERPRET, or without Triton at all: the naive PyTorch twin
    runs (forward and derived backward), and the file needs nothing but torch (and triton)."""
    script = NAIVE_SCRIPT.format(block=block, fused=str(codegen_path("padre3", "triton")),
                                 plain=str(codegen_path("padre3", "torch")))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_float64_runs_the_naive_twin() -> None:
    module = pc.compile("conv2former", dim=4, grid=(3, 2), backend="triton")
    x = torch.randn(2, 6, 4)
    with torch.no_grad():
        fused = module(x)
        double = module.double()(x.double())
    assert double.dtype == torch.float64
    assert torch.allclose(fused.double(), double, atol=1e-6)


@pytest.mark.parametrize(("name", "conv", "dim"),
                         [("conv2former", None, 4), ("padre3", "toeplitz", 4), ("sima", None, 16),
                          ("castling_vit", None, 16)],
                         ids=["conv2former", "padre3-folded-bias", "sima-folded-l1",
                              "castling-folded-l2"])
def test_torch_compile_traces_the_custom_op(name, conv, dim, monkeypatch) -> None:
    """fullgraph: the custom ops, in the Toeplitz form dense_for_conv's channel-major product
    with its bias left to the conv (in_bias), SimA's l1 normalisations folded into the
    linear attention's state (L1Tokens) and Castling-ViT's row normalisations into its kernels,
    forward and backward."""
    if conv:
        monkeypatch.setenv("PADRE_TRITON_CONV", conv)
    module = pc.compile(name, dim=dim, grid=None if name in ("sima", "castling_vit") else (3, 3),
                        backend="triton")
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 9, dim, requires_grad=True)
    y, y_ref = compiled(x), module(x)
    assert torch.allclose(y, y_ref, atol=1e-6)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert torch.allclose(gx, gx_ref, atol=1e-5)


def test_torch_compile_traces_the_custom_op_without_gradients_too() -> None:
    """Under no_grad an eager call skips the dispatcher (custom_op_caller); a trace must not."""
    module = pc.compile("conv2former", dim=4, grid=(3, 3), backend="triton")
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm.code)
        return gm.forward

    with torch.no_grad():
        torch.compile(module, backend=backend, fullgraph=True)(torch.randn(2, 9, 4))
    assert any("dwconv_hadamard_fwd" in code for code in graphs)


def test_custom_op_caller_takes_the_op_only_where_a_trace_needs_it(monkeypatch) -> None:
    """Without gradients: the implementation itself. With eager autograd: an autograd.Function
    of the implementation and the op's setup_context and backward (backward sees ctx.eager;
    keywords bound to positions with their defaults). Under a torch.compile trace: the op."""
    m = _kernels_module()
    calls = []

    def impl(x, weight, scale=None, keep=False):  # x * weight (* scale), and its flag
        calls.append(("impl", keep))
        return x * weight * (1.0 if scale is None else scale), x.new_empty(0)

    def setup(ctx, inputs, output):
        x, weight, scale, _ = inputs
        ctx.save_for_backward(x, weight)
        ctx.scale = scale

    def backward(ctx, dy, _):
        calls.append(("backward", getattr(ctx, "eager", False)))
        x, weight = ctx.saved_tensors
        return dy * weight, dy * x, None, None

    def op(*args, **kwargs):
        calls.append(("op", kwargs["keep"]))
        return args[0], args[0]

    call = m.custom_op_caller(op, impl, setup, backward, grad_flag="keep", outputs=1)
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    with torch.no_grad():
        call(x, w)
    call(x, weight=x.detach())  # gradients on, but nothing requires them
    assert calls == [("impl", False), ("impl", False)]
    calls.clear()
    (y,) = call(x, weight=w)  # a keyword argument requires grad: the eager Function
    y.sum().backward()
    assert calls == [("impl", True), ("backward", True)]
    assert torch.equal(w.grad, x)
    calls.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    call(x, w)
    assert calls == [("op", True)]


class Rejected:
    """A kernel whose every launch fails as a GPU compiler rejecting it would."""

    def __getitem__(self, grid):
        def launch(*a, **k):
            raise RuntimeError("PassManager::run failed (simulated)")
        return launch


def test_rejected_tensor_core_kernel_falls_back_to_direct(monkeypatch) -> None:
    """A GPU compiler rejecting the Toeplitz kernel costs a warning, not a wrong answer."""
    m = _kernels_module()
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)
    monkeypatch.setattr(m, "conv_form", lambda *a, **kw: "toeplitz")
    monkeypatch.setattr(m, "TOEPLITZ_FAILED", {})

    monkeypatch.setattr(m, "dwconv_toeplitz_fwd_kernel", Rejected())
    x, weight = torch.randn(1, 12, 4), torch.randn(4, 3, 3)
    z = torch.empty_like(x)
    with pytest.warns(RuntimeWarning, match="falling back"):
        m.dwconv_hadamard_launch(x, weight, None, None, None, None, None, 3, 4, 1, 1, z, None)
    want = m.naive_dwconv_hadamard(x, weight, None, None, None, None, None, 3, 4, 1, 1, True,
                                   False)[0]
    assert torch.allclose(z, want, atol=1e-5) and m.TOEPLITZ_FAILED


class RejectedFor:
    """A kernel whose launches on an input ([B, N, C], the first argument) of one shape fail as
    a GPU compiler rejecting it would; the others run. `tried`: the shapes it was launched on."""

    def __init__(self, kernel, shape: tuple[int, ...]) -> None:
        self.kernel, self.shape, self.tried = kernel, shape, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.tried.append(tuple(args[0].shape))
            if tuple(args[0].shape) == self.shape:
                raise RuntimeError("PassManager::run failed (simulated)")
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_a_rejected_tensor_core_kernel_is_given_up_for_its_scope_alone(monkeypatch) -> None:
    """The Toeplitz kernel rejected for convs of 4 channels: those take the direct form, one
    warning, no second try; convs of 6 channels keep the tensor-core kernel. dense_for_conv
    stores each conv's input in the layout of the form its launcher then takes, and the
    backward takes the same form (the direct one recomputes u)."""
    m = _kernels_module()
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)
    monkeypatch.setattr(m, "conv_form", lambda *a, **kw: "toeplitz")
    monkeypatch.setattr(m, "TOEPLITZ_FAILED", {})
    monkeypatch.setattr(m, "WGRAD_FAILED", {})
    fwd = RejectedFor(m.dwconv_toeplitz_fwd_kernel, (2, 12, 4))
    monkeypatch.setattr(m, "dwconv_toeplitz_fwd_kernel", fwd)
    bwd = LaunchSpy(m.dwconv_hadamard_bwd_kernel)
    monkeypatch.setattr(m, "dwconv_hadamard_bwd_kernel", bwd)
    gen = torch.Generator().manual_seed(11)

    def conv(c: int) -> None:
        x, gate, dz = (torch.randn(2, 12, c, generator=gen) for _ in range(3))
        weight, bias = torch.randn(c, 3, 3, generator=gen), torch.randn(c, generator=gen)
        args = (None, None, None, 3, 4, 1, 1, True, False)
        with nan_poisoned():  # a u the forward leaves unwritten is NaN
            z, _, u = m._dwconv_hadamard_impl(x, weight, bias, gate, *args, keep_u=True)
        want = m.naive_dwconv_hadamard(x, weight, bias, gate, *args)[0]
        assert torch.allclose(z, want, atol=1e-5)
        got = m._dwconv_hadamard_bwd_impl(x, weight, bias, gate, None, None, None, dz, None,
                                          3, 4, 1, 1, None, u)
        wants = m.naive_dwconv_hadamard_bwd(x, weight, bias, gate, None, None, None, dz, None,
                                            3, 4, 1, 1)
        for label, a, e in zip(("dx", "dg", "da", "dw", "db"), got, wants, strict=False):
            assert torch.allclose(a, e, atol=1e-4, rtol=1e-4), (c, label)

    with pytest.warns(RuntimeWarning, match="falling back"):
        conv(4)
    assert list(m.TOEPLITZ_FAILED) == [m.toeplitz_scope(torch.empty(2, 12, 4), 4, 3, 3, 3)]
    assert bwd.launches[-1][2]["RECOMPUTE"]  # the direct backward: the unwritten u unread
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for another scope, nor a second one
        fwd.tried.clear()
        conv(6)
        assert fwd.tried and set(fwd.tried) == {(2, 12, 6)}  # the tensor-core kernel ran
        assert not bwd.launches[-1][2]["RECOMPUTE"]
        fwd.tried.clear()
        conv(4)
        assert fwd.tried == [] and bwd.launches[-1][2]["RECOMPUTE"]  # direct, not retried
    x = torch.randn(2, 12, 5, generator=gen)
    for c, channel_major in ((4, False), (6, True)):
        weight, b = torch.randn(c, 5, generator=gen), torch.randn(c, generator=gen)
        y, left = m.dense_for_conv(x, weight, b, 3, 3, 3, fold_bias=True)
        assert y.mT.is_contiguous() == channel_major and (left is b) == channel_major
        want = torch.nn.functional.linear(x, weight, b)
        assert torch.allclose(y if left is None else y + left, want, atol=1e-5)


def test_rejected_tensor_core_kernel_under_autograd_keeps_u_as_the_fake_kernel_says(
        monkeypatch) -> None:
    """A gated conv under autograd keeps u; the tensor-core kernel failing at that launch
    leaves u's shape and dtype as keeps_u (and so the fake kernel) said, unwritten, and the
    backward (the direct form from then on) gives float64's gradients."""
    m = _kernels_module()
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)
    monkeypatch.setattr(m, "conv_form", lambda *a, **kw: "toeplitz")
    monkeypatch.setattr(m, "TOEPLITZ_FAILED", {})
    monkeypatch.setattr(m, "dwconv_toeplitz_fwd_kernel", Rejected())
    gen = torch.Generator().manual_seed(7)
    x, g, dz = (torch.randn(2, 12, 4, generator=gen) for _ in range(3))
    weight, bias = torch.randn(4, 3, 3, generator=gen), torch.randn(4, generator=gen)
    args = (None, None, None, 3, 4, 1, 1, True, False)
    with pytest.warns(RuntimeWarning, match="falling back"):
        z, _, u = m._dwconv_hadamard_impl(x, weight, bias, g, *args, keep_u=True)
    assert m.TOEPLITZ_FAILED and u.shape == x.shape and u.dtype == torch.float32
    u = m._dwconv_hadamard_impl(x, weight, bias, g, *args, keep_u=True)[2]  # after the failure
    assert u.shape == x.shape and u.dtype == torch.float32
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias, g)]
    got = torch.autograd.grad(m.dwconv_hadamard(*leaves, *args)[0], leaves, dz)
    x64 = [t.detach().double().requires_grad_() for t in leaves]
    want = m.naive_dwconv_hadamard(*x64, *args)[0]
    assert torch.allclose(z.double(), want.detach(), atol=1e-5)  # the direct kernel's z
    for gt, r in zip(got, torch.autograd.grad(want, x64, dz.double()), strict=True):
        assert torch.allclose(gt.double(), r, atol=1e-5, rtol=1e-5)


ALIGNED_WIDTH = {"token-major": (20, 1), "channel-major": (24, 8), "channel-major-4": (20, 4)}


@pytest.mark.parametrize("layout", list(ALIGNED_WIDTH))
def test_gpu_block_sizes_across_tile_boundaries(form, layout, monkeypatch) -> None:
    """The GPU tile sizes (not the interpreter's) on a grid spanning several tiles each way;
    channel-major x takes the aligned strip: HALO = 8 > pad where 8 divides the width, 4 where
    only 4 does."""
    m = _kernels_module()
    for name in ("dwconv_hadamard_config", "dwconv_toeplitz_config"):
        real = getattr(m, name)
        monkeypatch.setattr(m, name, lambda *a, real=real, **k: real(*a[:-1], True, **k))
    gen = torch.Generator().manual_seed(7)
    (w, align), b, h, c, k = ALIGNED_WIDTH[layout], 2, 37, 20, 5
    x, gate, acc = (torch.randn(b, h * w, c, generator=gen) for _ in range(3))
    if layout != "token-major":
        x = x.transpose(1, 2).contiguous().mT  # [B, N, C] view of [B, C, N]
    assert m.strip_alignment(x, w) == align
    halo = m.dwconv_toeplitz_config(c, k, True, rows=h, pad_w=2, align=align)["HALO"]
    weight, bias, scale = (torch.randn(*s, generator=gen) for s in ((c, k, k), (c,), (c,)))
    z, o = (torch.full((b, h * w, c), float("nan")) for _ in range(2))  # contiguous outputs
    shifts = []
    real = m.toeplitz_operand
    monkeypatch.setattr(m, "toeplitz_operand", lambda *a: shifts.append(a[3]) or real(*a))
    m.dwconv_hadamard_launch(x, weight, bias, gate, acc, None, scale, h, w, 2, 2, z, o)
    if form != "direct":  # the strip's left margin: HALO - pad, HALO = pad rounded up to align
        assert (halo, shifts) == ({1: 2, 4: 4, 8: 8}[align], [halo - 2])
    want_z, want_o = m.naive_dwconv_hadamard(x, weight, bias, gate, acc, None, scale, h, w, 2,
                                             2, True, True)
    assert torch.allclose(z, want_z, atol=1e-4) and torch.allclose(o, want_o, atol=1e-4)
    dz, do = torch.randn_like(x), torch.randn_like(x)
    with nan_poisoned():  # every torch.empty the backward allocates starts as NaN
        got = m._dwconv_hadamard_bwd_impl(x, weight, bias, gate, acc, None, scale, dz, do, h, w,
                                          2, 2)
    assert not any(t.isnan().any() for t in got)
    want = m.naive_dwconv_hadamard_bwd(x, weight, bias, gate, acc, None, scale, dz, do, h, w, 2,
                                       2)
    for label, a, e in zip(("dx", "dg", "da", "dw", "db", "ds", "dsa", "dbi"), got, want,
                           strict=True):
        assert a.shape == e.shape, label
        assert torch.allclose(a, e, atol=1e-3, rtol=1e-4), label


def test_every_gpu_tile_candidate_matches_naive_twin(monkeypatch) -> None:
    """Each tile the first GPU launch may pick, run under the interpreter on an aligned
    channel-major input: the timing chooses among correct kernels only."""
    m = _kernels_module()
    monkeypatch.setenv("PADRE_TRITON_CONV", "toeplitz")
    gen = torch.Generator().manual_seed(11)
    b, h, w, c, k = 1, 70, 40, 16, 11  # more rows than BH = 64, three column stripes
    x = torch.randn(b, c, h * w, generator=gen).mT  # channel-major [B, N, C] view
    gate = torch.randn(b, h * w, c, generator=gen)
    weight, bias = torch.randn(c, k, k, generator=gen), torch.randn(c, generator=gen)
    configs = m.dwconv_toeplitz_configs(c, k, True, rows=h, pad_w=5, align=8)
    want = m.naive_dwconv_hadamard(x, weight, bias, gate, None, None, None, h, w, 5, 5, True,
                                   False)[0]
    for cfg in configs:
        monkeypatch.setattr(m, "dwconv_toeplitz_configs", lambda *a, cfg=cfg, **kw: [cfg])
        z = torch.full((b, h * w, c), float("nan"))
        m.dwconv_hadamard_launch(x, weight, bias, gate, None, None, None, h, w, 5, 5, z, None)
        assert torch.allclose(z, want, atol=1e-3, rtol=1e-4), cfg



@pytest.mark.parametrize("slab", ["slab", "slab2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("k", "pad_h"), [(17, 0), (17, 8), (17, 16), (3, 1), (1, 0)],
                         ids=["17-top", "17-centred", "17-causal", "3", "1"])
def test_slab_windows_hold_every_row_tap(k: int, pad_h: int, dtype, slab: str,
                                         monkeypatch) -> None:
    """SLAB at the window's limits: 17 row taps read rows a + i up to 15 + 16, the last of the
    32-row window, with the window's top PH rows above the tile (causal: all 16), over three
    row tiles and a grid shorter than one, whole or with the strip's 32 columns in two parts
    (slab2); then the slab is offered only up to 17 taps."""
    m = _kernels_module()
    monkeypatch.setenv("PADRE_TRITON_CONV", slab)
    launched = []  # the forced config's PARTS, per launch
    monkeypatch.setattr(m, "fastest", lambda key, configs, launch: launched.append(
        configs[0]["PARTS"]) or configs[0])
    gen = torch.Generator().manual_seed(k + pad_h)
    for h, w in ((40, 12), (5, 9)):
        b, c = 2, 3
        x = torch.randn(b, c, h * w, generator=gen).mT.to(dtype)  # channel-major view
        weight = torch.randn(c, k, 3, generator=gen).to(dtype)
        z = torch.full((b, h * w, c), float("nan"), dtype=dtype)
        m.dwconv_hadamard_launch(x, weight, None, None, None, None, None, h, w, pad_h, 1, z,
                                 None)
        want = m.naive_dwconv_hadamard(x.double(), weight.double(), None, None, None, None,
                                       None, h, w, pad_h, 1, True, False)[0]
        assert torch.allclose(z.double(), want, atol=TOL[dtype] * 10, rtol=TOL[dtype]), (h, w)
    assert launched == [m.SLAB_FORMS[slab]] * 2  # the strip: 16 + 2 + 3 - 1 - 1 -> 32 wide
    for taps, offered in ((17, True), (18, False)):
        configs = m.dwconv_toeplitz_configs(64, 11, True, rows=56, kh=taps)
        assert any(cfg.get("SLAB") for cfg in configs) == offered

def test_fastest_times_each_candidate_once_per_shape(monkeypatch) -> None:
    m = _kernels_module()
    times = {1: 3.0, 2: 1.0, 3: 2.0}
    timed = []

    def bench(fn, **kwargs):
        assert kwargs["return_mode"] == "median"  # do_bench's default is the mean
        fn()
        return times[timed[-1]]

    monkeypatch.setattr(m.triton.testing, "do_bench", bench)
    monkeypatch.setattr(m, "TUNED", {})
    monkeypatch.setattr(m, "TIMES", {})
    configs = [{"BC": 1}, {"BC": 2}, {"BC": 3}]
    launch = lambda cfg: timed.append(cfg["BC"])  # noqa: E731
    assert m.fastest(("shape",), configs, launch) == {"BC": 2}
    assert m.TIMES == {("shape",): [({"BC": 1}, 3.0), ({"BC": 2}, 1.0), ({"BC": 3}, 2.0)]}
    launched = [1, 1, 2, 2, 3, 3]  # each candidate once on its own, then by do_bench
    assert m.fastest(("shape",), configs, launch) == {"BC": 2} and timed == launched
    monkeypatch.setenv("PADRE_TRITON_TUNE", "0")
    assert m.fastest(("other",), configs, launch) == {"BC": 1} and timed == launched
    monkeypatch.delenv("PADRE_TRITON_TUNE")
    before = torch.are_deterministic_algorithms_enabled()
    try:  # deterministic algorithms: the default tiles, even where a timing chose others
        torch.use_deterministic_algorithms(True)
        assert m.fastest(("shape",), configs, launch) == {"BC": 1} and timed == launched
    finally:
        torch.use_deterministic_algorithms(before)


def test_fastest_skips_a_candidate_that_fails_and_raises_when_all_do(monkeypatch) -> None:
    """A tile this GPU cannot compile is no candidate; it must not give up the form."""
    m = _kernels_module()
    monkeypatch.setattr(m.triton.testing, "do_bench", lambda fn, **_: fn() or 1.0)
    monkeypatch.setattr(m, "TUNED", {})
    configs = [{"BC": 1}, {"BC": 2}]

    def launch(cfg):
        if cfg["BC"] == 1:
            raise RuntimeError("out of resource: shared memory (simulated)")

    assert m.fastest(("shape",), configs, launch) == {"BC": 2}

    def broken(cfg):
        raise RuntimeError(f"no tile fits ({cfg})")

    with pytest.raises(RuntimeError, match="BC': 1"):
        m.fastest(("another",), configs, broken)


def test_the_toeplitz_tuning_key_holds_what_specialises_the_kernel(monkeypatch) -> None:
    """Two launches alike but for the gate's dtype compile different kernels and are timed
    apart: each is its own key of `fastest`. A channel-major gate is read token-major
    (token_rows): one key."""
    m = _kernels_module()
    keys = []
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)
    monkeypatch.setattr(m, "conv_form", lambda *a, **kw: "toeplitz")
    monkeypatch.setattr(m, "fastest", lambda key, configs, launch: keys.append(key) or configs[0])
    x, weight = torch.randn(1, 16 * 16, 4), torch.randn(4, 3, 3)
    gate = torch.randn(1, 16 * 16, 4)
    for g in (gate, gate.half(), gate.mT.contiguous().mT):
        m.dwconv_hadamard_launch(x, weight, None, g, None, None, None, 16, 16, 1, 1,
                                 torch.empty_like(x), None)
    assert len(set(keys)) == 2 and keys[0] == keys[2]


def test_fastest_does_not_time_a_candidate_that_compiles_to_the_same_code(monkeypatch) -> None:
    """A variant the installed Triton lowers like an earlier candidate (Triton 3.6 issues ".ca"
    strip copies as cp.async.cg) is recorded in SAME_CODE, not timed; machine code from the
    cubin, else the PTX; no code (the interpreter): every candidate timed."""
    m = _kernels_module()
    timed = []

    def bench(fn, **_):
        timed.append(fn())
        return float(len(timed))

    monkeypatch.setattr(m.triton.testing, "do_bench", bench)
    monkeypatch.setattr(m, "TUNED", {})
    monkeypatch.setattr(m, "SAME_CODE", {})
    code = {1: {"cubin": b"a"}, 2: {"cubin": b"a"}, 3: {"ptx": "b"}, 4: {"cubin": b"c"}}
    configs = [{"BC": k} for k in code]

    def launch(cfg):
        return types.SimpleNamespace(asm=code[cfg["BC"]], bc=cfg["BC"])

    m.fastest(("shape",), configs, launch)
    assert [h.bc for h in timed] == [1, 3, 4]
    assert m.SAME_CODE == {("shape",): [({"BC": 2}, {"BC": 1})]}
    assert m.machine_code(None) is None and m.machine_code(launch({"BC": 3})) == "b"


def test_compile_together_launches_each_candidate_only_to_compile(monkeypatch) -> None:
    """compile_together hands every candidate to its launch with COMPILING set (start gives the
    kernel's warmup then); a launch that raises does not stop the others; COMPILING is reset.
    Where an async compile mode is active already it does nothing (fastest compiles one after
    another), and under the interpreter it does nothing."""
    from triton.runtime import _async_compile

    m = _kernels_module()
    configs = [{"BC": 1}, {"BC": 2}, {"BC": 3}]
    seen = []

    def launch(cfg):
        seen.append((cfg["BC"], m.COMPILING.get()))
        if cfg["BC"] == 2:
            raise RuntimeError("out of resource (simulated)")

    m.compile_together(configs, launch)  # the interpreter's module: nothing to compile
    assert seen == []
    monkeypatch.setattr(m, "INTERPRETED", False)
    m.compile_together(configs, launch)
    assert seen == [(1, True), (2, True), (3, True)] and not m.COMPILING.get()
    assert m.start({(4, 1, 1): "launcher"}, (4, 1, 1)) == "launcher"  # kernel[grid]
    kernel = types.SimpleNamespace(warmup=lambda *a, grid: ("warmup", grid, a))  # no [grid]
    token = m.COMPILING.set(True)
    try:
        assert m.start(kernel, (4, 1, 1))(7) == ("warmup", (4, 1, 1), (7,))
    finally:
        m.COMPILING.reset(token)
    seen.clear()
    token = _async_compile.active_mode.set(object())  # another mode is active: RuntimeError
    try:
        m.compile_together(configs, launch)
    finally:
        _async_compile.active_mode.reset(token)
    assert seen == [] and not m.COMPILING.get()


def test_first_launch_charges_the_band_to_the_candidates_that_read_it(monkeypatch) -> None:
    """Every forward builds the band operand a precomputed-band tile reads: the first launch's
    timings include that build (one per timed call), and a band gathered from the taps builds
    none, so the comparison is the forward's cost, not the kernel's alone."""
    m = _kernels_module()
    monkeypatch.setenv("PADRE_TRITON_CONV", "toeplitz")
    monkeypatch.setattr(m, "TUNED", {})
    monkeypatch.setattr(m, "TIMES", {})
    builds, real = [], m.toeplitz_operand
    monkeypatch.setattr(m, "toeplitz_operand", lambda *a: builds.append(1) or real(*a))
    timing = []

    def bench(fn, **_):
        before = len(builds)
        fn()
        timing.append(len(builds) - before)
        return 1.0 if timing[-1] else 2.0  # the gathered band loses: the band tile launches

    monkeypatch.setattr(m.triton.testing, "do_bench", bench)
    base = m.dwconv_toeplitz_config(4, 3, False, rows=5, pad_w=1)
    monkeypatch.setattr(m, "dwconv_toeplitz_configs",
                        lambda *a, **k: (base, dict(base, BAND_FROM_TAPS=True)))
    x, weight = torch.randn(1, 20, 4), torch.randn(4, 3, 3)
    z = torch.empty(1, 20, 4)
    m.dwconv_hadamard_launch(x, weight, None, None, None, None, None, 5, 4, 1, 1, z, None)
    assert timing == [1, 0]  # timed with its build; the gathered band without one
    assert len(builds) == 1 + 1 + 1  # first launch, timing, the launch of the pick
    want = m.naive_dwconv_hadamard(x, weight, None, None, None, None, None, 5, 4, 1, 1, True,
                                   False)[0]
    assert torch.allclose(z, want, atol=1e-5)


@pytest.mark.parametrize(("k", "pad_h", "pad_w"), [(5, 2, 2), (5, 1, 4), (1, 0, 0), (19, 9, 9)],
                         ids=["k5", "k5-asymmetric", "k1", "k19-bw32"])
@pytest.mark.parametrize("layout", ["token-major", "channel-major", "channel-major-2"])
@pytest.mark.parametrize("h", [37, 13], ids=["row-tiles", "one-tile"])
def test_tensor_core_weight_gradient_matches_conv2d_weight(h, layout, k, pad_h, pad_w) -> None:
    """dwconv_toeplitz_wgrad_kernel over several row tiles (BH = 16 < 37 rows: each tile's
    diagonal sums added to dw per tap) or one (13 rows), column stripes, masked channels,
    off-centre padding and the BW = 32 tiles of long taps; channel-major inputs take the
    aligned strip (HALO = pad rounded up to 8, or to 2 at width 26)."""
    m = _kernels_module()
    gen = torch.Generator().manual_seed(13)
    b, c = 2, 10
    w = 26 if layout == "channel-major-2" else 24
    if layout != "token-major":
        x, du = (torch.randn(b, c, h * w, generator=gen).mT for _ in range(2))
        assert m.strip_alignment(x, w) == m.strip_alignment(du, w) == (2 if w == 26 else 8)
    else:
        x, du = (torch.randn(b, h * w, c, generator=gen) for _ in range(2))
    dw = torch.zeros(c, k, k)
    m.dwconv_toeplitz_wgrad_launch(x, du, dw, h, w, pad_h, pad_w)
    want = m._depthwise_weight_grad(x, du, k, k, h, w, pad_h, pad_w)
    assert torch.allclose(dw, want, atol=1e-3, rtol=1e-4)


def test_rejected_weight_gradient_kernel_falls_back_to_torch(monkeypatch) -> None:
    m = _kernels_module()
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)

    monkeypatch.setattr(m, "dwconv_toeplitz_wgrad_kernel", Rejected())
    monkeypatch.setattr(m, "WGRAD_FAILED", {})
    x, du = torch.randn(1, 12, 4), torch.randn(1, 12, 4)
    want = m._depthwise_weight_grad(x, du, 3, 3, 3, 4, 1, 1)
    dw = torch.zeros(4, 3, 3)
    with pytest.warns(RuntimeWarning, match="conv2d_weight"):
        m.dwconv_toeplitz_wgrad_launch(x, du, dw, 3, 4, 1, 1)
    assert torch.allclose(dw, want, atol=1e-5) and m.WGRAD_FAILED
    dw.zero_()  # given up for that launch key: no second try, no second warning
    m.dwconv_toeplitz_wgrad_launch(x, du, dw, 3, 4, 1, 1)
    assert torch.allclose(dw, want, atol=1e-5) and len(m.WGRAD_FAILED) == 1


def test_a_rejected_weight_gradient_kernel_is_given_up_for_its_launch_key_alone(
        monkeypatch) -> None:
    """The weight-gradient kernel rejected at one launch key: torch's dw there, one warning;
    another key (more channels) keeps the tensor-core kernel."""
    m = _kernels_module()
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)
    wgrad = RejectedFor(m.dwconv_toeplitz_wgrad_kernel, (1, 12, 4))
    monkeypatch.setattr(m, "dwconv_toeplitz_wgrad_kernel", wgrad)
    monkeypatch.setattr(m, "WGRAD_FAILED", {})
    gen = torch.Generator().manual_seed(5)

    def grad(c: int) -> None:
        x, du = (torch.randn(1, 12, c, generator=gen) for _ in range(2))
        dw = torch.zeros(c, 3, 3)
        m.dwconv_toeplitz_wgrad_launch(x, du, dw, 3, 4, 1, 1)
        assert torch.allclose(dw, m._depthwise_weight_grad(x, du, 3, 3, 3, 4, 1, 1), atol=1e-5)

    with pytest.warns(RuntimeWarning, match="conv2d_weight"):
        grad(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grad(6)
        grad(4)
    assert wgrad.tried == [(1, 12, 4), (1, 12, 6)] and len(m.WGRAD_FAILED) == 1


@pytest.mark.parametrize(("bias", "fold"), [(False, False), (True, False), (True, True)])
def test_dense_for_conv_writes_channel_major_without_a_copy(bias: bool, fold: bool,
                                                            monkeypatch) -> None:
    """With a weight that requires grad (a module's parameter), torch.matmul would fold the
    product into x @ W^T and copy it to channel-major; the batched GEMM writes it directly.
    With fold_bias the bias is left to the conv: y + left is the dense map."""
    from torch.profiler import profile, record_function

    m = _kernels_module()
    monkeypatch.setenv("PADRE_TRITON_CONV", "toeplitz")
    monkeypatch.setattr(m, "TOEPLITZ_FAILED", {})
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 15, 6, generator=gen)
    weight = torch.randn(9, 6, generator=gen).requires_grad_()
    b = torch.randn(9, generator=gen).requires_grad_() if bias else None
    with profile(record_shapes=True) as prof, record_function("dense_for_conv"):
        y, left = m.dense_for_conv(x, weight, b, 3, 3, 3, fold_bias=fold)
    assert y.shape == (2, 15, 9) and y.mT.is_contiguous()  # [B, N, C] view of [B, C, N]
    assert (left is b) if fold else left is None
    want = torch.nn.functional.linear(x, weight, b)
    assert torch.allclose(y if left is None else y + left, want, atol=1e-5)
    copies = [ev.input_shapes for ev in prof.key_averages(group_by_input_shape=True)
              if ev.key in ("aten::copy_", "aten::clone", "aten::add_")
              and [2, 9, 15] in ev.input_shapes]
    assert len(copies) == (bias and not fold), f"activation-sized passes: {copies}"
    y.sum().backward()  # the expanded weight's gradient sums over the batch
    want_grad = torch.ones(2, 15, 9).flatten(0, 1).T @ x.flatten(0, 1)
    # fp32 sums of 30 terms in another order: 1e-8 absolute failed ~2% of unseeded draws
    assert torch.allclose(weight.grad, want_grad, atol=1e-5)


def test_dense_for_conv_keeps_its_bias_where_the_conv_is_direct(monkeypatch) -> None:
    """The direct form reads token-major input: F.linear adds the bias in cuBLAS's epilogue."""
    m = _kernels_module()
    monkeypatch.setenv("PADRE_TRITON_CONV", "direct")
    x, weight, b = torch.randn(2, 15, 6), torch.randn(9, 6), torch.randn(9)
    y, left = m.dense_for_conv(x, weight, b, 3, 3, 3, fold_bias=True)
    assert left is None and torch.allclose(y, torch.nn.functional.linear(x, weight, b))


@pytest.mark.parametrize(("h", "w", "k", "pad_h", "pad_w"),
                         [(5, 7, 5, 2, 2), (9, 16, 3, 1, 1), (4, 6, 5, 0, 4), (70, 40, 7, 3, 3)],
                         ids=["borders-only", "interior", "off-centre", "tiles"])
@pytest.mark.parametrize("layout", ["token-major", "channel-major"])
def test_input_bias_folds_into_the_conv(h, w, k, pad_h, pad_w, layout, form) -> None:
    """conv(x + bi) with bi folded (the Toeplitz kernel adds bi * conv(1), the taps inside the
    grid; the direct form adds bi to x) against F.conv2d of x + bi in float64: values and the
    gradients of x, the taps and bi. At the borders conv(1) is not the sum of all taps, so a
    fold that ignored them fails the 'borders-only' case."""
    m = _kernels_module()
    gen = torch.Generator().manual_seed(h * w + k)
    b, c = 2, 10
    x = (torch.randn(b, c, h * w, generator=gen).mT if layout == "channel-major"
         else torch.randn(b, h * w, c, generator=gen))
    weight, bias, bi, gate = (torch.randn(*s, generator=gen)
                              for s in ((c, k, k), (c,), (c,), (b, h * w, c)))
    leaves = [t.requires_grad_() for t in (x, weight, bias, bi)]
    z = m.dwconv_hadamard(x, weight, bias, gate, None, None, None, h, w, pad_h, pad_w, True,
                          False, bi)[0]
    x64, w64, b64, bi64 = (t.detach().double().requires_grad_() for t in leaves)
    x4 = (x64 + bi64).transpose(1, 2).reshape(b, c, h, w)
    x4 = torch.nn.functional.pad(x4, (pad_w, k - 1 - pad_w, pad_h, k - 1 - pad_h))
    want = torch.nn.functional.conv2d(x4, w64[:, None], b64, groups=c).flatten(2).mT
    want = want * gate.double()
    assert torch.allclose(z.double(), want, atol=1e-4, rtol=1e-4)
    dz = torch.randn(b, h * w, c, generator=gen)
    got = torch.autograd.grad(z, leaves, dz)
    ref = torch.autograd.grad(want, [x64, w64, b64, bi64], dz.double())
    for label, g, r in zip(("x", "weight", "bias", "in_bias"), got, ref, strict=True):
        err = float((g.double() - r).abs().max() / r.abs().max())
        assert err < 1e-5, (label, err)


@pytest.mark.parametrize("kept", [False, True], ids=["u-recomputed", "u-kept"])
@pytest.mark.parametrize(("gate", "scale", "reads_u"),
                         [(False, False, False), (True, False, True), (False, True, True),
                          (True, True, True)],
                         ids=["dz-alone", "gate", "do-and-scale", "gate-do-and-scale"])
def test_toeplitz_backward_launches_a_conv_for_u_only_where_it_is_read_and_not_kept(
        gate: bool, scale: bool, reads_u: bool, kept: bool, monkeypatch) -> None:
    """u = conv(x) + b enters dg (a gate) and ds (do with a scale) alone. Through autograd
    (kept) the forward stores u where they read it, and the backward launches one conv (dx);
    the backward op without u (recomputed) launches a second (u, then dx) where they read it.
    Every gradient against float64 autograd of the naive twin."""
    m = _kernels_module()
    monkeypatch.setenv("PADRE_TRITON_CONV", "toeplitz")
    from torch._library.custom_ops import OPDEFS

    launched = []  # (height, width, pad_h, pad_w, u stored) of every conv launch

    def counted(real):
        def launch(*args):
            launched.append((*args[7:11], len(args) > 14 and args[14] is not None))
            return real(*args)
        return launch

    # the op runs the launcher of whichever generated module registered it (the same text)
    op = OPDEFS[f"{m.DWCONV_OPS}::dwconv_hadamard_fwd"]._init_fn.__globals__
    for namespace in {id(ns): ns for ns in (vars(m), op)}.values():
        monkeypatch.setitem(namespace, "dwconv_hadamard_launch",
                            counted(namespace["dwconv_hadamard_launch"]))
    gen = torch.Generator().manual_seed(2 * reads_u + gate)
    b, h, w, c, k = 2, 6, 5, 3, 3
    x, g, a = (torch.randn(b, h * w, c, generator=gen) for _ in range(3))
    weight, bias, sa, s = (torch.randn(*shape, generator=gen) for shape in ((c, k, k), (c,),
                                                                           (c,), (c,)))
    inputs = dict(x=x, weight=weight, bias=bias, gate=g if gate else None,
                  acc=a if scale else None, acc_scale=sa if scale else None,
                  scale=s if scale else None)
    grad = torch.randn(b, h * w, c, generator=gen)
    conv, dx = (h, w, 0, 2), (h, w, 2, 0)  # dx: flipped taps, mirrored padding
    if kept:
        leaves = [t.requires_grad_() for t in inputs.values() if t is not None]
        out = m.dwconv_hadamard(*inputs.values(), h, w, 0, 2, not scale, scale)
        assert launched == [(*conv, reads_u)]  # u stored beside z, o
        launched.clear()
        got = dict(zip((n for n, t in inputs.items() if t is not None),
                       torch.autograd.grad(out[1 if scale else 0], leaves, grad), strict=True))
        assert launched == [(*dx, False)]
    else:
        dz, do = (None, grad) if scale else (grad, None)
        grads = m._dwconv_hadamard_bwd_impl(*inputs.values(), dz, do, h, w, 0, 2)
        assert launched == [(*conv, False)] * reads_u + [(*dx, False)]
        order = ("x", "gate", "acc", "weight", "bias", "scale", "acc_scale")  # the impl's
        got = {n: t for n, t in zip(order, grads, strict=False) if inputs[n] is not None}
        assert all(t.numel() == 0 for n, t in zip(order, grads, strict=False)
                   if inputs[n] is None)

    x64 = {name: t.detach().double().requires_grad_() for name, t in inputs.items()
           if t is not None}
    want = m.naive_dwconv_hadamard(*(x64.get(name) for name in inputs), h, w, 0, 2,
                                   not scale, scale)[1 if scale else 0]
    ref = dict(zip(x64, torch.autograd.grad(want, list(x64.values()), grad.double()),
                   strict=True))
    for name, r in ref.items():
        err = float((got[name].double() - r).abs().max() / r.abs().max())
        assert err < 1e-5, (name, err)


@pytest.mark.parametrize(("width", "offset", "want"),
                         [(24, 0, 8), (28, 0, 4), (14, 0, 2), (15, 0, 1), (24, 4, 4), (24, 1, 1)])
def test_strip_alignment_is_the_largest_common_power_of_two(width, offset, want) -> None:
    """Width, strides and offset (elements) of a channel-major x all divisible by the answer."""
    m = _kernels_module()
    c = 4
    base = torch.randn(2 * c * 3 * width + offset)
    x = base[offset:].view(2, c, 3 * width).mT  # [B, N, C] view, token stride 1
    assert m.strip_alignment(x, width) == want
    assert m.strip_alignment(x.contiguous(), width) == 1  # token-major


@pytest.mark.parametrize(("kw", "bk", "bw", "shift"), [(11, 32, 16, 3), (5, 32, 16, 11),
                                                        (1, 16, 16, 0), (19, 64, 32, 5)])
def test_toeplitz_operand_is_the_banded_matrix(kw, bk, bw, shift) -> None:
    """t[c, i, k, j] = w[c, i, k - j - shift] inside the band, 0 elsewhere, entry by entry."""
    m = _kernels_module()
    weight = torch.randn(3, 2, kw, dtype=torch.float64)
    got = m.toeplitz_operand(weight, bk, bw, shift, torch.float32)
    want = torch.zeros(3, 2, bk, bw)
    for k in range(bk):
        for j in range(bw):
            if 0 <= k - j - shift < kw:
                want[:, :, k, j] = weight[:, :, k - j - shift].float()
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, want)


def test_strided_channel_vectors_are_read_as_their_values(form) -> None:
    """Biases and scales given as strided [C] views (a slice of a wider parameter): the
    kernels index [C] vectors with stride 1, so the ops make them contiguous first."""
    m = _kernels_module()
    gen = torch.Generator().manual_seed(12)
    b, h, w, c, k = 2, 5, 6, 8, 3
    x, gate, acc = (torch.randn(b, h * w, c, generator=gen) for _ in range(3))
    weight = torch.randn(c, k, k, generator=gen)
    bias, scale, acc_scale, in_bias = (torch.randn(2 * c, generator=gen)[::2] for _ in range(4))
    got = m.dwconv_hadamard(x, weight, bias, gate, acc, acc_scale, scale, h, w, 1, 1, True,
                            True, in_bias)
    bias_c, acc_scale_c, scale_c, in_bias_c = (t.contiguous()
                                               for t in (bias, acc_scale, scale, in_bias))
    want = m.naive_dwconv_hadamard(x, weight, bias_c, gate, acc, acc_scale_c, scale_c, h, w, 1,
                                   1, True, True, in_bias_c)
    for label, a, e in zip("zo", got[:2], want, strict=True):
        assert torch.allclose(a, e, atol=1e-4), label
    dz, do = torch.randn_like(x), torch.randn_like(x)
    grads = m._dwconv_hadamard_bwd_impl(x, weight, bias, gate, acc, acc_scale, scale, dz, do,
                                        h, w, 1, 1, in_bias)
    wants = m.naive_dwconv_hadamard_bwd(x, weight, bias_c, gate, acc, acc_scale_c, scale_c, dz,
                                        do, h, w, 1, 1, in_bias_c)
    for label, a, e in zip(("dx", "dg", "da", "dw", "db", "ds", "dsa", "dbi"), grads, wants,
                           strict=True):
        assert torch.allclose(a, e, atol=1e-3, rtol=1e-4), label


def test_tokens_that_do_not_fill_the_grid_are_refused() -> None:
    """N != H * W: a clear error from the op, not rows read past the grid (direct) or
    unwritten output (Toeplitz)."""
    m = _kernels_module()
    x = torch.randn(1, 67, 4)
    weight = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match="67 tokens do not fill the 8 x 8 grid"):
        m.dwconv_hadamard(x, weight, None, None, None, None, None, 8, 8, 1, 1, True, False)
    with pytest.raises(ValueError, match="67 tokens do not fill the 8 x 8 grid"):
        m._dwconv_hadamard_bwd_impl(x, weight, None, None, None, None, None, x, None, 8, 8, 1,
                                    1)


def test_batch_offsets_widen_to_64_bits_where_an_offset_needs_them(form, monkeypatch) -> None:
    """B * N * C may pass 2**31 (e.g. 64 x 224 x 224 x 768): index_widths then sets I64, and
    every kernel forms its batch offsets in int64 (per row where row tiles span images;
    offsets inside an image stay int32 unless the image itself is that wide: WIDE, below);
    below it they stay int32, the cheaper code. The int64 path, forced here, computes what
    the int32 one does (forward and backward, both forms)."""
    import re

    from padre_compiler.backends.triton import kernels, linear_attention

    m = _kernels_module()
    meta = dict(device="meta", dtype=torch.bfloat16)
    assert m.index_widths(torch.empty(1, 102400, 1152, **meta), None) == {"I64": False,
                                                                          "WIDE": False}
    assert m.index_widths(torch.empty(64, 224 * 224, 768, **meta)) == {"I64": True,
                                                                       "WIDE": False}
    assert m.index_widths(torch.empty(64, 768, 224 * 224, **meta).mT)["I64"]
    for text in (kernels.KERNEL, linear_attention.KERNEL):
        for body in re.split(r"\n    @triton\.jit", text)[1:]:
            name = re.search(r"def (\w+)\(", body).group(1)
            if name.endswith("_kernel"):
                assert "I64: tl.constexpr = False" in body, name
                assert (re.search(r"if I64:.*\n\s+(i_bh?|o_b) = \1\.to\(tl\.int64\)", body)
                        or re.search(r"= outer_tile\([^\n]*, I64\)", body)), name
    assert re.search(r"def outer_tile\(.*\n(.*\n)*?\s+if I64:\n\s+outer = outer\.to\(tl\.int64\)",
                     kernels.SHARED)
    gen = torch.Generator().manual_seed(13)
    b, h, w, c, k = 2, 5, 6, 8, 3
    x, gate, acc, dz, do = (torch.randn(b, h * w, c, generator=gen) for _ in range(5))
    weight, bias, scale = (torch.randn(*s, generator=gen) for s in ((c, k, k), (c,), (c,)))
    args = (x, weight, bias, gate, acc, None, scale)
    monkeypatch.setattr(m, "index_widths", lambda *tensors: {"I64": True, "WIDE": False})
    got = m.dwconv_hadamard(*args, h, w, 1, 1, True, True)
    want = m.naive_dwconv_hadamard(*args, h, w, 1, 1, True, True)
    assert all(torch.allclose(a, e, atol=1e-4) for a, e in zip(got[:2], want, strict=True))
    grads = m._dwconv_hadamard_bwd_impl(*args, dz, do, h, w, 1, 1)
    wants = m.naive_dwconv_hadamard_bwd(*args, dz, do, h, w, 1, 1)
    for label, a, e in zip(("dx", "dg", "da", "dw", "db", "ds", "dsa", "dbi"), grads, wants,
                           strict=True):
        assert torch.allclose(a, e, atol=1e-3, rtol=1e-4), label


class LaunchSpy:
    """A Triton kernel whose launches are recorded (grid, arguments) after they run."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            handle = self.kernel[grid](*args, **kwargs)
            self.launches.append((grid, args, kwargs))
            return handle
        return run


def _own_rows(m, spies: dict[str, LaunchSpy]) -> None:
    """Each row of partial sums holds its own program's terms alone: the bias, scale and
    accumulator-scale gradients of its (image, token tile), the weight gradient of its (row
    group, column stripe), a group's rows spanning images. Races between programs sharing a
    row would not show in the interpreter, which runs programs one by one."""
    for grid, args, kw in spies["dwconv_hadamard_bwd_kernel"].launches:
        x, weight, bias, gate, acc, do, u = (args[i] for i in (0, 1, 2, 3, 4, 8, 9))
        du, db, ds, dsa = args[10], args[14], args[15], args[16]
        h, w = args[-2:]
        if kw["RECOMPUTE"]:  # u = conv(x) + b, recomputed in the kernel
            u = m.naive_dwconv_hadamard(x, weight, bias, None, None, None, None, h, w,
                                        kw["PH"], kw["PW"], True, False)[0]

        for rows, terms in ((db, du), (ds, do * u * gate), (dsa, do * acc)):
            tiles = terms.float().split(kw["BT"], dim=1)  # [B, BT, C] each
            want = torch.stack([t.sum(1) for t in tiles], 1).flatten(0, 1)  # [(image, tile), C]
            assert rows.shape == (grid[0], du.shape[2])  # axis 0: (image, tile)
            torch.testing.assert_close(rows, want, rtol=1e-5, atol=1e-5)
    for grid, args, kw in spies["dwconv_toeplitz_wgrad_kernel"].launches:
        x, du, rows = args[0].float(), args[1].float(), args[2]
        height, width, group = args[10], args[11], args[13]
        kh, kw_, bw = kw["KH"], kw["KW"], kw["BW"]
        token = torch.arange(du.shape[1])
        stacked = torch.arange(du.shape[0])[:, None] * height + token // width  # [B, N]
        stripes = -(-width // bw)  # axis 0: (row group, stripe)
        want = torch.stack([  # [(row group, stripe), C, KH, KW]
            m._depthwise_weight_grad(
                x, du * ((stacked // group == g) & (token % width // bw == j))[..., None],
                kh, kw_, height, width, kw["PH"], kw["PW"])
            for g in range(grid[0] // stripes) for j in range(stripes)])
        torch.testing.assert_close(rows, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_deterministic_mode_sums_partial_rows_in_a_fixed_order(deterministic, form,
                                                               monkeypatch) -> None:
    """torch.use_deterministic_algorithms(True): the backward kernels write rows of partial
    sums (PARTIAL), one a program, which torch adds in a fixed order, instead of fp32 atomic
    adds; the gradients (every reduction: dw, db, ds, dsa, dbi) match float64 either way, in
    every conv form. Two token tiles and two column stripes a program grid."""
    m = _kernels_module()
    gen = torch.Generator().manual_seed(7)
    b, h, w, c, k = 2, 15, 18, 8, 3
    x, gate, acc, dz, do = (torch.randn(b, h * w, c, generator=gen) for _ in range(5))
    weight, bias, scale, acc_scale, in_bias = (torch.randn(*s, generator=gen)
                                               for s in ((c, k, k), (c,), (c,), (c,), (c,)))
    args = (x, weight, bias, gate, acc, acc_scale, scale)
    spies = {name: LaunchSpy(getattr(m, name))
             for name in ("dwconv_hadamard_bwd_kernel", "dwconv_toeplitz_wgrad_kernel")}
    for name, spy in spies.items():
        monkeypatch.setattr(m, name, spy)
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.use_deterministic_algorithms(deterministic)
        grads = m._dwconv_hadamard_bwd_impl(*args, dz, do, h, w, 1, 1, in_bias)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    wants = m.naive_dwconv_hadamard_bwd(*(t.double() for t in args), dz.double(), do.double(),
                                        h, w, 1, 1, in_bias.double())
    for label, got, want in zip(("dx", "dg", "da", "dw", "db", "ds", "dsa", "dbi"), grads,
                                wants, strict=True):
        err = (got.double() - want).abs().max() / want.abs().max()
        assert err < 1e-5, (label, float(err))
    launches = [kw.get("PARTIAL", False) for spy in spies.values() for *_, kw in spy.launches]
    assert launches == [deterministic] * (1 if form == "direct" else 2)
    if deterministic:
        _own_rows(m, spies)


def test_deterministic_direct_weight_gradient_keeps_16_bit_gradients_unrounded(
        monkeypatch) -> None:
    """The direct form's dw under deterministic algorithms (torch's conv2d_weight) reads du in
    fp32, as the kernel's own atomic sums do: with fp16 activations both carry ~1e-7 relative
    error against float64, not the ~1e-3 of du rounded to fp16."""
    monkeypatch.setenv("PADRE_TRITON_CONV", "direct")
    m = _kernels_module()
    gen = torch.Generator().manual_seed(9)
    b, h, w, c, k = 2, 6, 7, 8, 3
    x, gate, dz = (torch.randn(b, h * w, c, generator=gen).half() for _ in range(3))
    weight, bias = torch.randn(c, k, k, generator=gen), torch.randn(c, generator=gen)
    args = (x, weight, bias, gate, None, None, None, dz, None, h, w, 1, 1)
    want = m.naive_dwconv_hadamard_bwd(x.double(), weight.double(), bias.double(),
                                       gate.double(), None, None, None, dz.double(), None,
                                       h, w, 1, 1)[3]
    before = torch.are_deterministic_algorithms_enabled()
    try:
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            dw = m._dwconv_hadamard_bwd_impl(*args)[3]
            assert float((dw.double() - want).abs().max() / want.abs().max()) < 1e-5
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("layout", ["tokens", "channels"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast-bf16"])
def test_channel_major_linear_gives_token_major_input_gradients(autocast, layout) -> None:
    """dense_for_conv's product: y^T = W x^T stored channel-major; its backward gives dx
    token-major (no layout copy for the reader of dx) and dW over all tokens, equal to float64
    autograd of F.linear; under autocast it computes in bf16 and returns gradients in the
    inputs' dtypes. dW is one GEMM over all tokens, or per image where x's images do not
    flatten into one token axis."""
    m = _kernels_module()
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(3, 20, 8, generator=gen)
    if layout == "channels":  # images that do not flatten into one token axis: dW per image
        x = x.transpose(1, 2).contiguous().mT
    x.requires_grad_()
    weight = torch.randn(12, 8, generator=gen, requires_grad=True)
    dy = torch.randn(3, 20, 12, generator=gen)
    dtype = torch.bfloat16 if autocast else torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = m.ChannelMajorLinear.apply(x, weight, dtype)
    assert y.shape == (3, 12, 20) and y.is_contiguous() and y.dtype == dtype
    dx, dw = torch.autograd.grad(y.mT, (x, weight), dy)
    assert dx.is_contiguous() and dx.dtype == dw.dtype == torch.float32
    def rel(got, ref):
        return float((got.detach().double() - ref).abs().max() / ref.abs().max())

    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    want = torch.autograd.grad(torch.nn.functional.linear(x64, w64), (x64, w64), dy.double())
    tol = 2e-2 if autocast else 1e-5
    for label, got, ref in zip(("dx", "dw"), (dx, dw), want, strict=True):
        assert rel(got, ref) < tol, label
    assert rel(y.mT, torch.nn.functional.linear(x64, w64).detach()) < tol


def test_images_spanning_2_31_elements_take_the_direct_kernels_in_int64(form,
                                                                        monkeypatch) -> None:
    """An image ([N, C] at its strides) spanning 2**31 elements (Hyena's 3C-wide short conv
    past 932k tokens of 768 channels): the conv takes the direct kernels with token offsets
    in int64 too (WIDE, with I64), forward and backward, whatever form was asked for; the
    path, forced here on a small image, computes what the int32 one does. The forward reads
    x at any strides, so its channel offsets are int64 too: a channel-major x strides its
    channels by N, and (C - 1) N passes 2**31 (a review found them int32); so are the
    backward's, whose du may be channel-major (a later review found them int32 there)."""
    import re

    from padre_compiler.backends.triton import kernels

    int64 = r"\.to\(tl\.int64\)"
    widened = {"dwconv_hadamard_fwd_kernel": rf"o_t, o_c = o_t{int64}, o_c{int64}",
               "dwconv_hadamard_bwd_kernel": rf"o_t, o_c = o_t{int64}, o_c{int64}"}
    for body in re.split(r"\n    @triton\.jit", kernels.KERNEL)[1:]:
        name = re.search(r"def (\w+)\(", body).group(1)
        if name in widened:
            assert re.search(r"if WIDE:.*\n(\s+#.*\n)*\s+" + widened[name], body), name
    m = _kernels_module()
    meta = dict(device="meta", dtype=torch.bfloat16)
    wide = {"I64": True, "WIDE": True}
    assert m.index_widths(torch.empty(1, 10**6, 3 * 768, **meta)) == wide
    assert m.index_widths(None, torch.empty(1, 10**6, 3 * 768, **meta)[..., :768]) == wide
    assert not m.index_widths(torch.empty(64, 224 * 224, 768, **meta))["WIDE"]
    spies = {name: LaunchSpy(getattr(m, name)) for name in (
        "dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel",
        "dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_wgrad_kernel")}
    for name, spy in spies.items():
        monkeypatch.setattr(m, name, spy)
    monkeypatch.setattr(m, "index_widths", lambda *tensors: wide)
    gen = torch.Generator().manual_seed(17)
    b, h, w, c, k = 2, 5, 6, 8, 3
    x, gate, acc, dz, do = (torch.randn(b, h * w, c, generator=gen) for _ in range(5))
    weight, bias, scale, in_bias = (torch.randn(*s, generator=gen)
                                    for s in ((c, k, k), (c,), (c,), (c,)))
    args = (x, weight, bias, gate, acc, None, scale)
    got = m.dwconv_hadamard(*args, h, w, 1, 1, True, True, in_bias)
    want = m.naive_dwconv_hadamard(*args, h, w, 1, 1, True, True, in_bias)
    assert all(torch.allclose(a, e, atol=1e-4) for a, e in zip(got[:2], want, strict=True))
    grads = m._dwconv_hadamard_bwd_impl(*args, dz, do, h, w, 1, 1, in_bias)
    wants = m.naive_dwconv_hadamard_bwd(*args, dz, do, h, w, 1, 1, in_bias)
    for label, a, e in zip(("dx", "dg", "da", "dw", "db", "ds", "dsa", "dbi"), grads, wants,
                           strict=True):
        assert torch.allclose(a, e, atol=1e-3, rtol=1e-4), label
    assert not spies["dwconv_toeplitz_fwd_kernel"].launches
    assert not spies["dwconv_toeplitz_wgrad_kernel"].launches
    direct = [kw for name in ("dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel")
              for *_, kw in spies[name].launches]
    assert len(direct) == 3 and all(kw["WIDE"] and kw["I64"] for kw in direct)


def test_the_batch_rides_on_grid_axis_0(form, monkeypatch) -> None:
    """CUDA holds 65,535 programs on grid axes 1 and 2 and 2**31 - 1 on axis 0: every conv
    kernel launch (forward and backward, deterministic rows too) keeps its other axes
    independent of the batch, so batches past 65,535 images launch."""
    m = _kernels_module()
    names = ("dwconv_hadamard_fwd_kernel", "dwconv_toeplitz_fwd_kernel",
             "dwconv_hadamard_bwd_kernel", "dwconv_toeplitz_wgrad_kernel")
    grids = {}
    for b in (1, 3):
        spies = {name: LaunchSpy(getattr(m, name)) for name in names}
        for name, spy in spies.items():
            monkeypatch.setattr(m, name, spy)
        gen = torch.Generator().manual_seed(b)
        x, gate, dz = (torch.randn(b, 20, 5, generator=gen) for _ in range(3))
        weight = torch.randn(5, 3, 3, generator=gen)
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            try:
                m._dwconv_hadamard_bwd_impl(x, weight, None, gate, None, None, None, dz, None,
                                            4, 5, 1, 1)
            finally:
                torch.use_deterministic_algorithms(False)
        grids[b] = {name: [g for g, _, _ in spy.launches] for name, spy in spies.items()}
    assert any(grids[1].values())
    for name in names:
        assert [g[1:] for g in grids[1][name]] == [g[1:] for g in grids[3][name]], name
        assert all(len(g) <= 2 for g in grids[3][name]), name




def test_launches_run_on_their_inputs_device(monkeypatch) -> None:
    """Triton launches on the current CUDA device: each op's implementation makes its first
    argument's device current for the call (tensors on cuda:1 under current device 0), and
    enters nothing where it already is, or on the CPU. Without a GPU the devices are faked."""
    kernels = _kernels_module()
    entered = []

    class Device:
        def __init__(self, device) -> None:
            self.device = device

        def __enter__(self) -> None:
            entered.append(self.device.index)

        def __exit__(self, *exc) -> None:
            entered.append("exit")

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", Device)
    seen = []
    run = kernels.on_input_device(lambda x, y=None: seen.append(list(entered)) or "out")
    on = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 1))
    here = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))
    assert run(on, y=2) == "out" and seen == [[1]] and entered == [1, "exit"]
    entered.clear()
    assert run(here) == "out" and run(torch.zeros(1)) == "out" and entered == []
    families = {"padre3": ("_dwconv_hadamard_impl", "_dwconv_hadamard_bwd_impl"),
                "castling_vit": ("_head_state_impl", "_head_apply_impl", "_rows_vjp_impl"),
                "hyena": ("_long_conv_hadamard_impl", "_long_conv_hadamard_bwd_impl")}
    for name, impls in families.items():  # every op implementation is guarded
        grid = (2, 3) if name == "padre3" else None
        module = sys.modules[type(pc.compile(name, dim=16, grid=grid,
                                             backend="triton")).__module__]
        assert all(getattr(module, impl).__wrapped__ for impl in impls)


@pytest.mark.parametrize("form", ["direct", "toeplitz"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_dwconv_ops_pass_opcheck(monkeypatch, form: str, dtype: torch.dtype) -> None:
    """torch.library.opcheck of the fused conv's forward and backward ops, with a
    channel-major dz (float64 runs the naive twins, whose gradients must be as contiguous as
    the fake kernels say)."""
    from tests.helpers import generated_runtime

    runtime = generated_runtime("padre3", 4, grid=(2, 3))
    ops = getattr(torch.ops, runtime.DWCONV_OPS)
    monkeypatch.setenv("PADRE_TRITON_CONV", form)
    gen = torch.Generator().manual_seed(5)
    b, h, w, c = 2, 2, 3, 4
    x, g, do = (torch.randn(b, h * w, c, generator=gen, dtype=dtype) for _ in range(3))
    weight = torch.randn(c, 3, 3, generator=gen, dtype=dtype)
    scale, in_bias = (torch.randn(c, generator=gen, dtype=dtype) for _ in range(2))
    torch.library.opcheck(ops.dwconv_hadamard_fwd, (x, weight, None, g, None, None, scale, h, w,
                                                     1, 1, True, True, in_bias, True))
    dz = torch.randn(b, c, h * w, generator=gen, dtype=dtype).mT
    torch.library.opcheck(ops.dwconv_hadamard_bwd, (x, weight, None, g, None, None, scale, dz,
                                                     do, h, w, 1, 1, in_bias, None))


def test_bfloat16_runs_the_naive_twins_under_the_interpreter() -> None:
    """The interpreter's tl.dot on bfloat16 is wrong (errors of 1e10): those inputs take the
    naive twins there; float32 and float16 take the kernels."""
    from tests.helpers import generated_runtime

    runtime = generated_runtime("padre3", 4, grid=(2, 3))
    assert runtime.INTERPRETED
    x = torch.zeros(1)
    assert runtime._use_triton(x) and runtime._use_triton(x.half())
    assert not runtime._use_triton(x.bfloat16())


def test_a_kernel_past_33_taps_a_side_takes_the_direct_form() -> None:
    """Past 33 taps in either direction the folded input bias's tap tile needs more shared
    memory than a GPU has: the direct form, not a tensor-core launch whose failure would
    give up the tensor-core form for every later conv (a tall kh passed; only kw was
    checked)."""
    m = _kernels_module()
    gpu_half = types.SimpleNamespace(is_cuda=True, dtype=torch.float16)
    assert m.conv_form(gpu_half, 56, kw=5, kh=33) == "toeplitz"
    assert m.conv_form(gpu_half, 56, kw=5, kh=35) == "direct"
    assert m.conv_form(gpu_half, 56, kw=35) == "direct"


@pytest.mark.parametrize(("name", "grid"), FUSED, ids=[n for n, _ in FUSED])
def test_a_second_derivative_through_the_kernels_is_refused(name: str, grid) -> None:
    """create_graph=True through a fused op raises (once_differentiable's deferred error never
    fired for autograd.grad(..., inputs=x): a gradient penalty silently lost the kernels'
    terms, 0.93 relative off on conv2former_gelu); first-order gradients are unchanged."""
    module = pc.compile(name, dim=16, grid=grid, backend="triton")
    x = torch.randn(2, 12, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="fused Triton backward is not differentiable"):
        torch.autograd.grad(module(x).square().sum(), x, create_graph=True)
    (gx,) = torch.autograd.grad(module(x).square().sum(), x)
    assert gx.shape == x.shape and torch.isfinite(gx).all()
