"""The long-convolution region (long_conv_hadamard: long_conv_in_kernel, torch's FFTs,
long_conv_out_kernel) in the CPU interpreter: its derivation proved in sympy at small N, the
kernels against float64 at real sizes (forward and backward, every optional operand, strided
layouts, NaN-poisoned outputs), the custom ops' registrations, and the regions the compiler
forms."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import padre_compiler as pc
from padre_compiler.backends.triton import long_conv
from padre_compiler.backends.triton.regions import find_regions
from padre_compiler.compiler import as_spec, optimise, pass_context
from padre_compiler.derive.hyena import hyena_spec
from padre_compiler.spec import dsl
from padre_compiler.verify.poison import nan_poisoned
from tests.helpers import generated_runtime

TOL = {torch.float32: 2e-5, torch.float16: 4e-3}


@pytest.fixture(scope="module")
def runtime():
    return generated_runtime("hyena", 8)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_fft_formulas_are_the_causal_maps_and_their_derivatives(n: int) -> None:
    """Symbolic (sympy, one channel): the forward's circular convolution of the operands
    zero-padded to 2N, and the backward's three circular correlations, equal the causal
    convolution and its gradients for x, h and the skip d at every t, lag and tap."""
    checks = long_conv.derivation_checks(n)
    assert all(checks.values()), checks


@pytest.mark.parametrize("n", [2, 3, 5])
def test_fft_formulas_hold_at_the_least_length_and_not_below(n: int) -> None:
    """Any FFT length from 2N - 1 gives every formula (the runtime's is 2N); at 2N - 2 the
    circular convolution wraps around into t = N - 1."""
    assert all(long_conv.derivation_checks(n, n2=2 * n - 1).values())
    assert not long_conv.derivation_checks(n, n2=2 * n - 2)["T_h x = circular(x, h)[:N]"]


def test_the_symbolic_checks_fail_for_a_wrong_formula() -> None:
    """Without the zero padding (FFTs of size N) the circular convolution wraps around; a
    convolution where the adjoint needs a correlation gives wrong dx, dh and dd."""
    unpadded = long_conv.derivation_checks(4, n2=4)
    assert not unpadded["T_h x = circular(x, h)[:N]"]
    swapped = long_conv.derivation_checks(4, corr=long_conv.circular)
    assert not any(swapped[k] for k in ("dx = corr(dy, h)[:N] + d dy", "dh = corr(dy, x)[:N]",
                                         "dd = corr(dy, x)[0]"))


def _oracle(a, b, filt, skip, gate):
    """o = (T_h x + d ⊙ x) ⊙ g, x = a ⊙ b, by definition: each channel's causal Toeplitz
    matrix (taps past the filter's length are 0)."""
    n = a.shape[1]
    x = a if b is None else a * b
    lag = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # [t, s]: t - s
    taps = torch.cat([filt, filt.new_zeros(filt.shape[0], max(n - filt.shape[1], 0))], 1)
    toeplitz = torch.where(lag >= 0, taps[:, lag.clamp_min(0)], 0.)  # [C, t, s]
    y = torch.einsum("cts,bsc->btc", toeplitz, x)
    if skip is not None:
        y = y + skip * x
    return y if gate is None else y * gate


def _operand(gen, bsz: int, n: int, c: int, dtype, layout: str) -> torch.Tensor:
    """[B, N, C] in a layout the generated code passes: contiguous, a channel slice of a wider
    tensor (a split part), or sequence-first ([N, B, C] transposed)."""
    if layout == "slice":
        return torch.randn(bsz, n, 3 * c, generator=gen).to(dtype)[..., c:2 * c]
    if layout == "sequence-first":
        return torch.randn(n, bsz, c, generator=gen).to(dtype).transpose(0, 1)
    return torch.randn(bsz, n, c, generator=gen).to(dtype)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(bsz=st.integers(1, 3), n=st.integers(1, 140), c=st.integers(1, 70),
       half=st.booleans(), with_b=st.booleans(), with_skip=st.booleans(),
       with_gate=st.booleans(), layout=st.sampled_from(["contiguous", "slice",
                                                         "sequence-first"]),
       short_filter=st.booleans(), seed=st.integers(0, 99))
def test_forward_and_backward_match_float64(runtime, bsz, n, c, half, with_b, with_skip,
                                            with_gate, layout, short_filter, seed) -> None:
    """Every optional operand, tiles across the 64-token and 64-channel boundaries, strided
    operands, a filter shorter than the sequence: the output and the gradients of every
    operand against float64 autograd of the definition, every output element written."""
    dtype = torch.float16 if half else torch.float32
    gen = torch.Generator().manual_seed(seed)
    a = _operand(gen, bsz, n, c, dtype, layout)
    b = _operand(gen, bsz, n, c, dtype, layout) if with_b else None
    gate = _operand(gen, bsz, n, c, dtype, layout) if with_gate else None
    filt = (torch.randn(c, max(n // 2, 1) if short_filter else n + 3, generator=gen)
            / n ** 0.5).to(dtype)
    skip = torch.randn(c, generator=gen).to(dtype) if with_skip else None
    inputs = [t if t is None else t.detach().requires_grad_() for t in (a, b, filt, skip, gate)]
    with nan_poisoned():
        (out,) = runtime.long_conv_hadamard(*inputs)
    doubles = [t if t is None else t.detach().double().requires_grad_() for t in inputs]
    want = _oracle(*doubles)
    scale = want.detach().abs().max().clamp_min(1e-12)
    assert out.dtype == dtype and out.isfinite().all()
    assert float((out.detach().double() - want.detach()).abs().max() / scale) < TOL[dtype]
    grad = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    present = [k for k, t in enumerate(inputs) if t is not None]
    with nan_poisoned():
        got = torch.autograd.grad(out, [inputs[k] for k in present], grad.to(dtype))
    ref = torch.autograd.grad(want, [doubles[k] for k in present], grad)
    for k, g, r in zip(present, got, ref, strict=True):
        assert g.dtype == dtype and g.shape == r.shape
        err = float((g.double() - r).abs().max() / r.abs().max().clamp_min(1e-12))
        assert err < 10 * TOL[dtype], (["a", "b", "filt", "skip", "gate"][k], err)


def _launches(runtime, monkeypatch) -> list[str]:
    """Records each kernel launch (name) and each FFT of the runtime."""
    calls: list[str] = []

    class Counted:
        def __init__(self, kernel) -> None:
            self.kernel = kernel

        def __getitem__(self, grid):
            calls.append(self.kernel.__name__ if hasattr(self.kernel, "__name__")
                         else self.kernel.fn.__name__)
            return self.kernel[grid]

    for name in ("long_conv_in_kernel", "long_conv_out_kernel", "spectral_correlation_kernel"):
        monkeypatch.setitem(runtime.long_conv_in.__globals__, name,
                            Counted(runtime.long_conv_in.__globals__[name]))
    for name in ("rfft", "irfft"):
        real = getattr(torch.fft, name)
        monkeypatch.setattr(torch.fft, name, lambda *a, real=real, name=name, **k: (
            calls.append(name), real(*a, **k))[1])
    return calls


def test_forward_is_two_launches_around_the_ffts_and_so_is_the_backward(runtime,
                                                                          monkeypatch) -> None:
    """Forward: long_conv_in, rfft of the operand and of the filter, irfft, long_conv_out.
    Backward: long_conv_in (dy and dg), rfft of dy, the spectra's batch sum and its irfft
    (dh), rfft of the filter and irfft for dx, long_conv_out (da and db)."""
    gen = torch.Generator().manual_seed(3)
    a, b, gate = (torch.randn(2, 40, 8, generator=gen, requires_grad=True) for _ in range(3))
    filt = torch.randn(8, 50, generator=gen, requires_grad=True)
    skip = torch.randn(8, generator=gen, requires_grad=True)
    calls = _launches(runtime, monkeypatch)
    (out,) = runtime.long_conv_hadamard(a, b, filt, skip, gate)
    assert calls == ["long_conv_in_kernel", "rfft", "rfft", "irfft", "long_conv_out_kernel"]
    calls.clear()
    out.sum().backward()
    assert calls == ["long_conv_in_kernel", "rfft", "spectral_correlation_kernel", "irfft",
                     "rfft", "irfft", "long_conv_out_kernel"]
    assert all(t.grad is not None for t in (a, b, gate, filt, skip))


def test_float64_runs_the_naive_twins(runtime, monkeypatch) -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = (torch.randn(1, 9, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    filt = torch.randn(3, 9, generator=gen, dtype=torch.float64)
    calls = _launches(runtime, monkeypatch)
    (out,) = runtime.long_conv_hadamard(a, b, filt, None, None)
    assert calls == ["rfft", "rfft", "irfft"] and out.dtype == torch.float64
    assert torch.allclose(out, _oracle(a, b, filt, None, None), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_kernels_match_their_naive_twins(runtime, dtype) -> None:
    """Each kernel against its naive twin on the same operands (both optional products)."""
    gen = torch.Generator().manual_seed(5)
    a, b, e = (torch.randn(2, 70, 66, generator=gen).to(dtype) for _ in range(3))
    for args in ((a, b, e), (a, None, None)):
        got, want = runtime.long_conv_in(*args), runtime.naive_long_conv_in(*args)
        for g, w in zip(got, want, strict=True):
            assert (g is None) == (w is None) and (g is None or torch.equal(g, w))
    yp, xp = (torch.randn(2, 66, 140, generator=gen) for _ in range(2))
    d = torch.randn(66, generator=gen).to(dtype)
    for args in ((yp, xp, d, a, b, 70, True, dtype), (yp, xp, None, None, None, 70, False,
                                                      dtype)):
        got, want = runtime.long_conv_out(*args), runtime.naive_long_conv_out(*args)
        for g, w in zip(got, want, strict=True):
            assert (g is None) == (w is None)
            if g is not None:
                assert torch.allclose(g.float(), w.float(), rtol=1e-3 if dtype != torch.float32
                                      else 1e-6, atol=1e-6)


def test_int64_offsets_compute_the_same(runtime, monkeypatch) -> None:
    """The kernels' I64 path (every offset in int64, taken where one reaches 2**31) gives what
    the int32 path gives."""
    gen = torch.Generator().manual_seed(6)
    a, b, gate = (torch.randn(2, 33, 10, generator=gen, requires_grad=True) for _ in range(3))
    filt = torch.randn(10, 33, generator=gen, requires_grad=True)
    args = (a, b, filt, None, gate)

    def run():
        (out,) = runtime.long_conv_hadamard(*args)
        return out, *torch.autograd.grad(out.square().sum(), [a, b, filt, gate])

    want = run()
    monkeypatch.setattr(runtime, "index_widths", lambda *tensors: {"I64": True, "WIDE": True})
    for got, ref in zip(run(), want, strict=True):
        assert torch.allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("absent", [(), ("b",), ("skip",), ("gate",), ("b", "skip"),
                                    ("b", "gate"), ("skip", "gate"), ("b", "skip", "gate")],
                         ids=lambda absent: "-".join(absent) or "none")
@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "mixed"])
def test_the_long_conv_ops_pass_opcheck(runtime, absent, mixed) -> None:
    """torch.library.opcheck: the fake kernels, schemas and autograd registration of the
    forward op (with and without its kept tensors) and the backward op (with and without the
    filter's gradient) agree with the real ops, for every optional operand absent or present
    (each absent gradient a tensor of its own: outputs may not alias) and for operands of
    mixed dtypes (as autocast leaves Mamba-LTI's: the output in the promoted dtype, each
    gradient in its operand's)."""
    gen = torch.Generator().manual_seed(7)
    a, b, gate, do = (torch.randn(2, 21, 6, generator=gen) for _ in range(4))
    filt, skip = torch.randn(6, 24, generator=gen), torch.randn(6, generator=gen)
    if mixed:  # 16-bit a, fp32 b and gate: the output fp32 where b or gate is present
        a, do = a.half(), do.half()
    ops = dict(a=a, b=b, filt=filt, skip=skip, gate=gate)
    operands = [None if k in absent else v for k, v in ops.items()]
    fwd = getattr(torch.ops, runtime.LONG_CONV_OPS).long_conv_hadamard
    for keep in (False, True):
        torch.library.opcheck(fwd, (*operands, keep))
    out, y, xf = fwd(*operands, True)
    present = [t.dtype for t in (operands[0], operands[1], operands[4]) if t is not None]
    assert out.dtype == functools.reduce(torch.promote_types, present)
    bwd = getattr(torch.ops, runtime.LONG_CONV_OPS).long_conv_hadamard_bwd
    for filter_grad in (True, False):
        args = (*operands, y if y.numel() else None, xf, do.to(out.dtype), filter_grad)
        torch.library.opcheck(bwd, args)
        grads = bwd(*args)
        for grad, operand in zip(grads, (a, operands[1], filt, operands[3], operands[4]),
                                 strict=True):
            if grad.numel():
                assert grad.dtype == operand.dtype
        empties = [g for g in grads if not g.numel()]
        assert len({id(g) for g in empties}) == len(empties)


def test_mamba_lti_under_autocast_traces_forward_and_backward() -> None:
    """Autocast leaves Mamba-LTI's long convolution fp32 and 16-bit operands (an expand of x,
    two dense maps): the compiled module's output and gradients are the eager module's."""
    module = pc.compile("mamba_lti", dim=8, backend="triton")
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(12))

    def run(m):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(xg)
        return [out.float(), *torch.autograd.grad(out.float().square().sum(),
                                                  [xg, *module.parameters()])]

    for got, want in zip(run(compiled), run(module), strict=True):
        assert got.dtype == want.dtype and torch.allclose(got, want, atol=1e-6)


def test_a_frozen_filter_skips_its_gradient(runtime, monkeypatch) -> None:
    """Without the filter's and the skip's gradients the backward makes no spectral batch sum
    (nor its inverse FFT); the other gradients are unchanged."""
    gen = torch.Generator().manual_seed(13)
    a, b, gate = (torch.randn(2, 30, 5, generator=gen, requires_grad=True) for _ in range(3))
    filt, skip = torch.randn(5, 30, generator=gen), torch.randn(5, generator=gen)

    def grads(trained: bool):
        f, d = (t.detach().requires_grad_(trained) for t in (filt, skip))
        (out,) = runtime.long_conv_hadamard(a, b, f, d, gate)
        return torch.autograd.grad(out.square().sum(), [a, b, gate])

    want = grads(True)
    calls = _launches(runtime, monkeypatch)
    got = grads(False)
    assert "spectral_correlation_kernel" not in calls and calls.count("irfft") == 2
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_torch_compile_traces_hyena_forward_and_backward() -> None:
    module = pc.compile("hyena", dim=8, backend="triton")
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 12, 8, requires_grad=True)
    y, y_ref = compiled(x), module(x)
    assert torch.allclose(y, y_ref, atol=1e-6)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert torch.allclose(gx, gx_ref, atol=1e-5)


def _regions(spec):
    """The optimised graph the Triton backend lowers, and its long-convolution regions."""
    g, _ = optimise(spec, pass_context(spec, 8, None))
    dw = find_regions(g)
    return g, long_conv.find_long_conv_regions(g, {r.conv for r in dw.values()} | set(dw))


def test_hyena_of_order_3_chains_two_regions_without_sharing_a_node() -> None:
    """z3 = (T z2) ⊙ y3 ends the first region and is the second's plain input (its value is
    made once); each region absorbs its gate, the first also the product making z2."""
    _, regions = _regions(hyena_spec(3, length=16))
    assert len(regions) == 2
    first, second = sorted(regions.values(), key=lambda r: r.conv)
    assert first.product is not None and first.gate is not None
    assert second.a == first.end and second.product is None and second.gate is not None


def test_a_product_of_two_long_convolutions_gates_the_first() -> None:
    """long_conv(p) ⊙ long_conv(q ⊙ r): the product ends the first conv's region (the second
    conv's value its gate); the second conv is a region of its own that ends at itself."""
    x = dsl.tokens("sequence")
    first = dsl.long_conv(dsl.dense(x, "p"), "h1", length=16)
    second = dsl.long_conv(dsl.dense(x, "q") * dsl.dense(x, "r"), "h2", length=16)
    spec = dsl.spec("conv_times_conv", layout="sequence", output=dsl.dense(first * second, "o"))
    _, regions = _regions(spec)
    assert len(regions) == 2
    ends = {r.conv: r for r in regions.values()}
    gated = [r for r in ends.values() if r.gate is not None]
    (lone,) = [r for r in ends.values() if r.gate is None]
    assert len(gated) == 1 and gated[0].gate == lone.end == lone.conv
    assert lone.product is not None


def test_a_product_a_depthwise_region_computes_is_not_absorbed() -> None:
    """long_conv(dwconv(x) ⊙ y): the product is the depthwise region's (its gate), so the long
    convolution reads it as a plain input."""
    x = dsl.tokens("sequence")
    y = dsl.dense(x, "p")
    z = dsl.dwconv1d(dsl.dense(x, "q"), "c", kernel=3, causal=True) * y
    out = dsl.long_conv(z, "h", length=16, skip=True) * dsl.dense(x, "r")
    spec = dsl.spec("dw_then_long", layout="sequence", output=dsl.dense(out, "o"))
    g, regions = _regions(spec)
    (region,) = regions.values()
    assert region.product is None and region.gate is not None
    assert region.a in find_regions(g)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 200), (2, 7, 513)])
def test_spectral_correlation_kernel_matches_its_naive_twin(runtime, shape) -> None:
    """sum_b u[b] conj(v[b]) across the 512-entry tile boundary, one batch row or several."""
    gen = torch.Generator().manual_seed(8)
    u, v = (torch.randn(*shape, generator=gen, dtype=torch.complex64) for _ in range(2))
    got = runtime.spectral_correlation(u, v)
    want = (u.to(torch.complex128) * v.to(torch.complex128).conj()).sum(0)
    assert got.dtype == torch.complex64 and got.shape == want.shape
    assert torch.allclose(got.to(torch.complex128), want, atol=1e-5)
    assert torch.allclose(got, runtime.naive_spectral_correlation(u, v), atol=1e-5)


@pytest.mark.parametrize("parts", [[0, 1, 2], [2, 0, 1], [1, -1, 0], [0, -1, -1]])
def test_parts_of_one_tensor_give_its_gradient_whole(runtime, parts) -> None:
    """With parts, a holds the operands as blocks of one tensor (a split's): the output and
    the whole's gradient equal those of the same call on the blocks as views, whose gradients
    autograd concatenates."""
    gen = torch.Generator().manual_seed(14)
    c, k = 6, sum(p >= 0 for p in parts)
    whole = torch.randn(2, 37, k * c, generator=gen, requires_grad=True)
    filt, skip = torch.randn(c, 40, generator=gen), torch.randn(c, generator=gen)
    views = [None if p < 0 else whole[..., p * c:(p + 1) * c] for p in parts]
    dout = torch.randn(2, 37, c, generator=gen)
    (got,) = runtime.long_conv_hadamard(whole, None, filt, skip, None, parts=parts)
    (want,) = runtime.long_conv_hadamard(views[0], views[1], filt, skip, views[2])
    assert torch.equal(got, want)
    (g_got,) = torch.autograd.grad(got, whole, dout)
    (g_want,) = torch.autograd.grad(want, whole, dout)
    assert torch.allclose(g_got, g_want, atol=1e-6)


def test_parts_that_leave_a_block_without_a_role_are_refused(runtime) -> None:
    whole = torch.randn(1, 5, 12)
    with pytest.raises(ValueError, match="each 4-channel block"):
        runtime.long_conv_hadamard(whole, None, torch.randn(4, 5), None, None, parts=[0, 2, -1])


def test_hyenas_backward_concatenates_no_activation(runtime) -> None:
    """The long convolution's operands are the three parts of the short conv's output: the
    op reads it whole and its backward writes its gradient part by part, so no concatenation
    of activation gradients runs (before, the split's backward was one, 117 MB a training
    step at 3,136 x 8 x 384 in bf16: benchmarks/results/glue_census_hyena.md)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    module = pc.compile("hyena", dim=8, backend="triton")
    x = torch.randn(2, 20, 8, requires_grad=True)
    out = module(x)

    widths: list[int] = []  # of each [B, N, C] concatenation

    class Cats(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.cat.default and result.dim() == 3:
                widths.append(result.shape[-1])
            return result

    with Cats():
        out.square().sum().backward()
    assert widths == [], widths
    assert x.grad is not None and all(p.grad is not None for p in module.parameters())
    (region,) = _regions(as_spec("hyena"))[1].values()
    assert region.parts == (0, 1, 2)



@pytest.mark.parametrize("shared", [False, True], ids=["region-only", "gate-read-elsewhere"])
def test_the_op_reads_a_split_whole_only_where_the_region_reads_all_its_parts(shared) -> None:
    """long_conv(p ⊙ q) ⊙ r with p, q, r one fused dense map's split parts: the op takes the
    map whole; where r is read elsewhere too, the parts stay views (the split's backward then
    sums the two readers' gradients)."""
    x = dsl.tokens("sequence")
    p, q, r = (dsl.dense(x, name) for name in ("p", "q", "r"))
    out = dsl.long_conv(p * q, "h", length=16, skip=True) * r
    spec = dsl.spec("split_parts", layout="sequence",
                    output=dsl.dense(out + r if shared else out, "o"))
    g, regions = _regions(spec)
    (region,) = regions.values()
    assert all(g.node(n).op == "split" for n in (region.a, region.b, region.gate))
    assert (region.whole is None) == shared


@pytest.mark.parametrize("with_split", [True, False], ids=["split-whole", "filter"])
def test_names_longer_than_a_line_compile(with_split) -> None:
    """The call's arguments wrap at spaces only: a fused map's joined name or a filter's name
    longer than the line is never cut in two (it had been: a SyntaxError)."""
    x = dsl.tokens("sequence")
    if with_split:  # the fused map's name joins the three: over 84 characters
        p, q, r = (dsl.dense(x, f"{w}_projection_of_the_tokens") for w in ("first", "second",
                                                                           "third"))
        out = dsl.long_conv(p * q, "h", length=32) * r
    else:
        long = "a_projection_whose_descriptive_name_is_long_enough_to_exceed_the_wrap_width_"
        out = dsl.long_conv(x * x, long + "filter", length=32) * x
    spec = dsl.spec("long_names", layout="sequence", output=dsl.dense(out, "o"))
    module = pc.compile(spec, dim=8, backend="triton")
    reference = pc.compile(spec, dim=8)
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        assert torch.allclose(module(x), reference(x), atol=1e-5)


def test_a_backward_without_the_kept_spectrum_is_refused(runtime) -> None:
    """The op called directly with keep=False keeps no X; its backward says so instead of
    reading an empty spectrum."""
    gen = torch.Generator().manual_seed(15)
    a, b = (torch.randn(1, 8, 4, generator=gen, requires_grad=True) for _ in range(2))
    filt = torch.randn(4, 8, generator=gen, requires_grad=True)
    op = getattr(torch.ops, runtime.LONG_CONV_OPS).long_conv_hadamard
    out, _, _ = op(a, b, filt, None, None, False)
    with pytest.raises(ValueError, match="keep=True"):
        out.sum().backward()


def test_the_naive_backward_keeps_the_fake_kernels_layout(runtime) -> None:
    """In float64 (the naive twins) too, each gradient is the contiguous [B, N, C] tensor the
    fake kernel promises: a channel-major one failed inductor's backward (mamba_lti)."""
    gen = torch.Generator().manual_seed(3)
    a, b, gate = (torch.randn(2, 21, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    filt = torch.randn(6, 24, generator=gen, dtype=torch.float64)
    skip = torch.randn(6, generator=gen, dtype=torch.float64)
    ops = getattr(torch.ops, runtime.LONG_CONV_OPS)
    _, y, xf = ops.long_conv_hadamard(a, b, filt, skip, gate, True)
    do = torch.randn(2, 6, 21, generator=gen, dtype=torch.float64).mT  # channel-major
    torch.library.opcheck(ops.long_conv_hadamard_bwd,
                          (a, b, filt, skip, gate, y if y.numel() else None, xf, do, True))
