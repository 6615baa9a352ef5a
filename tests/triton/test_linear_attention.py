"""The linear-attention kernels (head_state, head_apply) in the CPU interpreter against float64,
forward and backward, under NaN-poisoned outputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler.verify.poison import nan_poisoned
from tests.helpers import generated_runtime

TOL = {torch.float32: 1e-5, torch.float16: 5e-3}


@pytest.fixture(scope="module")
def runtime():
    return generated_runtime("sima", 16)


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(b=st.integers(1, 2), heads=st.integers(1, 3), e=st.integers(1, 20),
       n=st.integers(1, 150), half=st.booleans(), seed=st.integers(0, 99))
def test_forward_matches_float64(runtime, b: int, heads: int, e: int, n: int, half: bool,
                                 seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, n, heads * e, generator=gen, dtype=torch.float64)
               for _ in range(3))
    dtype = torch.float16 if half else torch.float32
    qd, kd, vd = (t.to(dtype) for t in (q, k, v))
    with nan_poisoned():
        (state,) = runtime.head_state(kd, vd, heads)
        out = runtime.head_apply(qd, state, False)
        out_t = runtime.head_apply(qd, state, True)
    s64 = runtime.naive_head_state(kd.double(), vd.double(), heads)
    assert state.dtype == torch.float32 and _rel(state, s64) < TOL[dtype]
    assert out.dtype == dtype and _rel(out, runtime.naive_head_apply(qd.double(), s64, False)) \
        < 4 * TOL[dtype]
    assert _rel(out_t, runtime.naive_head_apply(qd.double(), s64, True)) < 4 * TOL[dtype]


def test_transpose_flag_matters(runtime) -> None:
    """The check above can fail: S and S^T differ for a non-symmetric state."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 9, 6, generator=gen) for _ in range(3))
    (s,) = runtime.head_state(k, v, 2)
    assert _rel(runtime.head_apply(q, s, True), runtime.naive_head_apply(q.double(),
                                                                         s.double(), False)) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_backward_matches_float64_autograd(runtime, dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    q, k, v, dy = (torch.randn(2, 37, 3 * 5, generator=gen, dtype=torch.float64)
                   for _ in range(4))
    qd, kd, vd = (t.to(dtype).requires_grad_() for t in (q, k, v))
    got = torch.autograd.grad((runtime.linear_attention(qd, kd, vd, 3) * dy.to(dtype)).sum(),
                              [qd, kd, vd])
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (qd, kd, vd))
    ref = runtime.naive_head_apply(q64, runtime.naive_head_state(k64, v64, 3), False)
    want = torch.autograd.grad((ref * dy).sum(), [q64, k64, v64])
    for label, g, w in zip("qkv", got, want, strict=True):
        assert g.dtype == dtype and _rel(g, w) < 10 * TOL[dtype], label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_the_gpu_tiles_match_float64(runtime, dtype, monkeypatch) -> None:
    """At the tiles a GPU launch takes (head_config(gpu=True): 1,024-token chunks, 64 tokens a
    step, 32 or 64 a head_apply tile), forward and backward: 1,100 tokens leave a last chunk
    of 76, which the state's loop stops at, and e = 48 pads a head to BE = 64."""
    config = runtime.head_config
    monkeypatch.setattr(runtime, "head_config",
                        lambda n, e, gpu, cuda_core_apply=False: config(n, e, True,
                                                                        cuda_core_apply))
    assert runtime.head_config(1100, 48, False)["CHUNK"] == 1024
    gen = torch.Generator().manual_seed(11)
    q, k, v, dy = (torch.randn(1, 1100, 2 * 48, generator=gen, dtype=torch.float64)
                   for _ in range(4))
    qd, kd, vd = (t.to(dtype).requires_grad_() for t in (q, k, v))
    with nan_poisoned():
        out = runtime.linear_attention(qd, kd, vd, 2)
        got = torch.autograd.grad((out * dy.to(dtype)).sum(), [qd, kd, vd])
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (qd, kd, vd))
    ref = runtime.naive_head_apply(q64, runtime.naive_head_state(k64, v64, 2), False)
    want = torch.autograd.grad((ref * dy).sum(), [q64, k64, v64])
    assert _rel(out.detach(), ref.detach()) < 4 * TOL[dtype]
    for label, g, w in zip("qkv", got, want, strict=True):
        assert _rel(g, w) < 10 * TOL[dtype], label


def _l1_tokens(x: torch.Tensor, eps: float) -> torch.Tensor:  # the spec's normalize, float64
    return x / (x.abs().sum(1, keepdim=True) + eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("slots", [("q_l1",), ("k_l1",), ("q_l1", "k_l1")])
def test_l1_normalisation_folded_into_the_state(runtime, dtype, slots) -> None:
    """linear_attention(q, k, v, q_l1=eps, k_l1=eps) scales the state's rows by the norms:
    equal, values and gradients, to normalising q / k first (float64 autograd)."""
    gen = torch.Generator().manual_seed(7)
    q, k, v, dy = (torch.randn(2, 41, 3 * 6, generator=gen, dtype=torch.float64)
                   for _ in range(4))
    eps = {"q_l1": 1e-3, "k_l1": 1e-2}
    qd, kd, vd = (t.to(dtype).requires_grad_() for t in (q, k, v))
    out = runtime.linear_attention(qd, kd, vd, 3, **{s: eps[s] for s in slots})
    got = torch.autograd.grad((out * dy.to(dtype)).sum(), [qd, kd, vd])
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (qd, kd, vd))
    qn = _l1_tokens(q64, eps["q_l1"]) if "q_l1" in slots else q64
    kn = _l1_tokens(k64, eps["k_l1"]) if "k_l1" in slots else k64
    ref = runtime.naive_head_apply(qn, runtime.naive_head_state(kn, v64, 3), False)
    want = torch.autograd.grad((ref * dy).sum(), [q64, k64, v64])
    assert out.dtype == dtype and _rel(out.detach(), ref.detach()) < 10 * TOL[dtype]
    for label, g, w in zip("qkv", got, want, strict=True):
        assert g.dtype == dtype and _rel(g, w) < 20 * TOL[dtype], label


def test_l1_fold_scales_rows_not_columns(runtime) -> None:
    """The check above can fail: the same norms applied to the state's columns (the axis the
    fold must not take) miss the normalised reference by far."""
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(1, 23, 2 * 5, generator=gen, dtype=torch.float64) for _ in range(3))
    state = runtime.naive_head_state(k, v, 2)
    norm = (q.abs().sum(1) + 1e-3).view(1, 2, 1, 5)  # columns
    wrong = runtime.naive_head_apply(q, state / norm, False)
    ref = runtime.naive_head_apply(_l1_tokens(q, 1e-3), state, False)
    assert _rel(wrong, ref) > 0.1


@pytest.mark.parametrize("trans", [False, True], ids=["S", "S^T"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_sign_epilogue_against_the_naive_twin(runtime, trans: bool, dtype) -> None:
    """head_apply(a, S, res=r, res_scale=d, res_sgn=True) = a S + sgn(r) d with d per batch
    ([B, C], the l1 norms' gradient): the kernel equals its naive twin in float64, with exact
    zeros in r (sign 0), r a strided view; r itself in place of its signs misses by far."""
    gen = torch.Generator().manual_seed(21)
    wide = torch.randn(2, 37, 2 * 10, generator=gen, dtype=torch.float64)
    wide[:, ::3, 10:13] = 0.0
    state = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    dn = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    a, r = wide[..., :10].to(dtype), wide[..., 10:].to(dtype)
    with nan_poisoned():
        got = runtime.head_apply(a, state.float(), trans, None, None, 0.0, r, dn.float(), None,
                                 None, True)
    want = runtime.naive_head_apply(a.double(), state, trans, None, None, 0.0, r.double(), dn,
                                    None, None, True)
    assert got.dtype == dtype and _rel(got, want) < 4 * TOL[dtype]
    unsigned = runtime.naive_head_apply(a.double(), state, trans, None, None, 0.0, r.double(),
                                        dn)
    assert _rel(unsigned, want) > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_state_kernel_makes_the_l1_norms(runtime, dtype) -> None:
    """head_state(k, v, a_l1=eps) = (diag(1 / (n + eps)) k^T v, n), n = sum_t |k[t]| from
    the state kernel's own tiles (several token chunks, N not a multiple of the tile),
    against float64."""
    gen = torch.Generator().manual_seed(22)
    k, v = (torch.randn(2, 150, 3 * 6, generator=gen, dtype=torch.float64) for _ in range(2))
    kd, vd = k.to(dtype), v.to(dtype)
    with nan_poisoned():
        state, norms = runtime._head_state_impl(kd, vd, 3, None, 1e-2)
    n64 = kd.double().abs().sum(1)
    assert norms.shape == (2, 3, 6) and _rel(norms, n64.view(2, 3, 6)) < 1e-6
    want = runtime.naive_head_state(_l1_tokens(kd.double(), 1e-2), vd.double(), 3)
    assert _rel(state, want) < TOL[dtype]
    with pytest.raises(ValueError, match="not both"):
        runtime.head_state(kd, vd, 3, 1e-3, 1e-2)


def test_l1_fold_backward_passes_gradcheck_in_float64(runtime) -> None:
    """The l1 folds' derived backward (the norms' terms sgn(x) dn added by the launches that
    write dq and dk, the state's rows rescaled) against finite differences: SimA's
    attention with a weighted state, and head_apply's a_l1 on S^T under an output
    epilogue."""
    gen = torch.Generator().manual_seed(23)
    q, k, v, r = (torch.randn(2, 7, 6, generator=gen, dtype=torch.float64).requires_grad_()
                  for _ in range(4))
    w = (torch.rand(2 * 3 * 3, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    s = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64).requires_grad_()

    def attention(q, k, v, w):
        return runtime.linear_attention(q, k, v, 2, w, q_l1=0.1, k_l1=0.2)

    def transposed(q, s, r):
        return runtime.head_apply(q, s, True, None, None, 0.0, r, None, 0.1, None, False, 0.3)

    assert torch.autograd.gradcheck(attention, (q, k, v, w), check_undefined_grad=False)
    assert torch.autograd.gradcheck(transposed, (q, s, r), check_undefined_grad=False)


def test_l1_fold_takes_no_pass_of_its_own_but_q_norms(runtime, monkeypatch) -> None:
    """SimA's attention (q and k l1-normalised) forward and backward: the state kernel makes
    k's norms (A_L1), the launches that write dq and dk add the norms' terms (RES_SGN), and
    the only torch ops over a [B, N, C] tensor are q's norms (forward, and recomputed in the
    backward): no sign, product or sum of gradients of their own."""
    from torch.utils._python_dispatch import TorchDispatchMode

    gen = torch.Generator().manual_seed(24)
    q, k, v, dy = (torch.randn(1, 9, 2 * 4, generator=gen) for _ in range(4))
    launched, full = [], []

    class Ops(TorchDispatchMode):  # the aten ops (not views) with an operand of q's size
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and any(isinstance(t, torch.Tensor) and t.numel() == q.numel()
                                        for t in args):
                full.append(func.__name__)
            return func(*args, **(kwargs or {}))

    for name in ("head_state_kernel", "head_apply_kernel"):
        monkeypatch.setattr(runtime, name, _Recording(getattr(runtime, name), launched))
    monkeypatch.setattr(runtime, "_use_triton", lambda x: True)  # launches, not the twins
    qg, kg, vg = (x.requires_grad_() for x in (q, k, v))
    with Ops():
        out = runtime.linear_attention(qg, kg, vg, 2, q_l1=1e-3, k_l1=1e-3)
        torch.autograd.grad(out, [qg, kg, vg], dy)
    assert [kw.get("A_L1", False) for kw in launched] == [True, False, False, False, False,
                                                           False]
    assert sum(kw.get("RES_SGN", False) for kw in launched) == 2
    passes = [f for f in full if not f.startswith(("new_empty", "empty"))]  # not allocations
    assert passes == ["linalg_vector_norm.default"] * 2, passes


def test_the_head_ops_pass_opcheck(runtime) -> None:
    """torch.library.opcheck: the fake kernels, schemas and autograd registrations of
    head_state (plain, with the l1 norms, with the row normalisation) and head_apply (a_l1 on
    S^T; the sign epilogue with a per-batch scale) agree with the real ops (the norms come
    out as a tensor of their own, not a view into the kernel's sums)."""
    gen = torch.Generator().manual_seed(26)
    ops = getattr(torch.ops, runtime.ATTENTION_OPS)
    a, b = (torch.randn(2, 70, 12, generator=gen) for _ in range(2))
    s, dn = torch.randn(2, 2, 6, 6, generator=gen), torch.randn(2, 12, generator=gen)
    for a_eps, a_l1 in ((None, None), (None, 1e-3), (1e-3, None)):
        torch.library.opcheck(ops.head_state, (a, b, 2, a_eps, a_l1))
    torch.library.opcheck(ops.head_apply,
                          (a, s, True, None, None, 0.0, None, None, None, None, False, 1e-3))
    torch.library.opcheck(ops.head_apply,
                          (a, s, False, None, None, 0.0, b, dn, None, None, True, None))


def _l2_rows(x: torch.Tensor, heads: int, eps: float) -> torch.Tensor:  # the spec's, float64
    b, n, w = x.shape
    xh = x.reshape(b, n, heads, w // heads)
    return (xh / (xh.norm(dim=-1, keepdim=True) + eps)).reshape(b, n, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("slots", [("q_l2",), ("k_l2",), ("q_l2", "k_l2")])
@pytest.mark.parametrize("zero_rows", [False, True], ids=["eps-0", "zero-rows"])
def test_l2_row_normalisation_folded_into_the_kernels(runtime, dtype, slots,
                                                      zero_rows) -> None:
    """linear_attention(q, k, v, q_l2=eps, k_l2=eps) normalises each row's head slice inside
    the kernels: equal, values and gradients, to normalising q / k first (float64 autograd),
    with a weighted state as Castling-ViT's; q's eps 0 as there, or (zero_rows) a token whose
    q and k head slices are zero, under eps > 0."""
    gen = torch.Generator().manual_seed(11)
    q, k, v, dy = (torch.randn(2, 41, 3 * 6, generator=gen, dtype=torch.float64)
                   for _ in range(4))
    weight = torch.rand(3 * 6 * 6, generator=gen, dtype=torch.float64) + 0.5
    eps = {"q_l2": 1e-3 if zero_rows else 0.0, "k_l2": 1e-2}
    if zero_rows:
        q[:, 5, 6:12] = k[:, 5, 6:12] = k[1, 7, :6] = 0
    qd, kd, vd = (t.to(dtype).requires_grad_() for t in (q, k, v))
    wd = weight.float().requires_grad_()
    with nan_poisoned():
        out = runtime.linear_attention(qd, kd, vd, 3, wd, **{s: eps[s] for s in slots})
    got = torch.autograd.grad((out * dy.to(dtype)).sum(), [qd, kd, vd, wd])
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (qd, kd, vd))
    w64 = weight.float().double().requires_grad_()
    qn = _l2_rows(q64, 3, eps["q_l2"]) if "q_l2" in slots else q64
    kn = _l2_rows(k64, 3, eps["k_l2"]) if "k_l2" in slots else k64
    state = runtime.naive_head_state(kn, v64, 3) * w64.view(1, 3, 6, 6)
    ref = runtime.naive_head_apply(qn, state, False)
    want = torch.autograd.grad((ref * dy).sum(), [q64, k64, v64, w64])
    assert out.dtype == dtype and _rel(out.detach(), ref.detach()) < 10 * TOL[dtype]
    for label, g, w in zip(("q", "k", "v", "weight"), got, want, strict=True):
        assert _rel(g, w) < 20 * TOL[dtype], label


def test_l2_row_vjp_is_the_projection(runtime) -> None:
    """The check above can fail: the normalisation's vector-Jacobian product without its
    projection term (g / (n + eps) alone, as a linear row scale would have it) misses the
    gradient of q by far; the naive twin's full product matches autograd."""
    gen = torch.Generator().manual_seed(12)
    x, g = (torch.randn(1, 13, 2 * 5, generator=gen, dtype=torch.float64) for _ in range(2))
    x.requires_grad_()
    want = torch.autograd.grad((_l2_rows(x, 2, 1e-3) * g).sum(), x)[0]
    assert _rel(runtime.naive_rows_vjp(x.detach(), g, 2, 1e-3), want) < 1e-12
    scale = runtime.naive_row_scale(x.detach(), 2, 1e-3)
    linear = (g.reshape(1, 13, 2, 5) * scale).reshape(1, 13, 10)
    assert _rel(linear, want) > 0.1
    with pytest.raises(ValueError, match="one of them"):  # one eps reaches the kernel
        runtime.head_apply(x.float(), torch.zeros(1, 2, 5, 5), True, 0.5, x.float(), 0.0)


def _output_fold(runtime, t: dict, terms: str, eps: dict, fold: bool) -> torch.Tensor:
    """Castling-ViT's output, rows(attention + res * d) + post, rows the l2 row normalisation,
    from the tensors t: folded into linear_attention, or (float64) the unfolded graph."""
    res = {"v-scaled+post": t["v"], "broadcast": t["v"].sum(1, keepdim=True).expand_as(t["v"]),
           "res-alone": t["r"]}[terms]
    scale = None if terms == "res-alone" else t["d"]
    post = None if terms == "broadcast" else t["post"]
    if fold:
        return runtime.linear_attention(t["q"], t["k"], t["v"], 3, t["weight"], q_l2=eps["q"],
                                        k_l2=eps["k"], res=res, res_scale=scale,
                                        out_l2=eps["out"], post=post)
    state = runtime.naive_head_state(_l2_rows(t["k"], 3, eps["k"]), t["v"], 3)
    y = runtime.naive_head_apply(_l2_rows(t["q"], 3, eps["q"]),
                                 state * t["weight"].view(1, 3, 6, 6), False)
    out = _l2_rows(y + (res if scale is None else res * scale), 3, eps["out"])
    return out if post is None else out + post


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("terms", ["v-scaled+post", "broadcast", "res-alone"])
@pytest.mark.parametrize("zero_rows", [False, True], ids=["eps-0", "zero-rows"])
def test_output_normalisation_folded_into_the_epilogue(runtime, dtype, terms,
                                                       zero_rows) -> None:
    """linear_attention(..., res=, res_scale=, out_l2=, post=) makes rows(q S + res * d) +
    post in head_apply's epilogue: values and the gradients of every input equal float64
    autograd of the unfolded graph, with res = v (Castling-ViT's diagonal term: v's gradient
    sums three paths) and a post term, res a token sum broadcast over tokens (token stride 0,
    the exact_kernel variant's), and res without a scale. eps 0 as Castling-ViT's, or
    (zero_rows) eps > 0 and a token whose q, k and res head slices are zero."""
    gen = torch.Generator().manual_seed(13)
    t64 = {name: torch.randn(2, 41, 3 * 6, generator=gen, dtype=torch.float64)
           for name in ("q", "k", "v", "r", "post")}
    t64["weight"] = torch.rand(3 * 6 * 6, generator=gen, dtype=torch.float64) + 0.5
    t64["d"] = torch.rand(3 * 6, generator=gen, dtype=torch.float64) + 0.5
    dy = torch.randn(2, 41, 3 * 6, generator=gen, dtype=torch.float64)
    eps = dict.fromkeys(("q", "k", "out"), 0.1 if zero_rows else 0.0)
    if zero_rows and terms != "broadcast":
        for name in ("q", "k", "v", "r"):
            t64[name][:, 5, 6:12] = 0
    small = {"weight", "d"}  # parameters: fp32
    t = {n: x.to(torch.float32 if n in small else dtype).requires_grad_()
         for n, x in t64.items()}
    with nan_poisoned():
        out = _output_fold(runtime, t, terms, eps, fold=True)
    got = torch.autograd.grad((out * dy.to(dtype)).sum(), list(t.values()), allow_unused=True)
    ref64 = {n: x.detach().double().requires_grad_() for n, x in t.items()}
    ref = _output_fold(runtime, ref64, terms, eps, fold=False)
    want = torch.autograd.grad((ref * dy).sum(), list(ref64.values()), allow_unused=True)
    assert out.dtype == dtype and _rel(out.detach(), ref.detach()) < 10 * TOL[dtype]
    for label, g, w in zip(t, got, want, strict=True):
        assert (g is None) == (w is None), label
        assert g is None or _rel(g, w) < 20 * TOL[dtype], label



def test_output_epilogue_backward_passes_gradcheck_in_float64(runtime) -> None:
    """In float64 the ops run their naive twins, under the same derived backward (the
    output normalisation's product and res_scale's sum from head_rows_vjp, then the
    attention's): gradcheck against finite differences, S and S^T, eps > 0."""
    gen = torch.Generator().manual_seed(18)
    q, k, v, p = (torch.randn(2, 7, 6, generator=gen, dtype=torch.float64).requires_grad_()
                  for _ in range(4))
    w = (torch.rand(2 * 3 * 3, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    d = (torch.rand(6, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    s = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64).requires_grad_()

    def attention(q, k, v, p, w, d):
        return runtime.linear_attention(q, k, v, 2, w, q_l2=0.1, k_l2=0.1, res=v, res_scale=d,
                                        out_l2=0.1, post=p)

    def transposed(q, s, v, d):
        return runtime.head_apply(q, s, True, 0.1, None, 0.0, v, d, 0.2)

    assert torch.autograd.gradcheck(attention, (q, k, v, p, w, d), check_undefined_grad=False)
    assert torch.autograd.gradcheck(transposed, (q, s, v, d), check_undefined_grad=False)

def test_output_fold_backward_is_one_more_launch(runtime, monkeypatch) -> None:
    """The folded output's forward is the two attention launches; its backward launches
    head_apply once more (OUT_VJP: the output normalisation's product, q S recomputed)
    before the attention's own four."""
    gen = torch.Generator().manual_seed(14)
    q, k, v, dy = (torch.randn(1, 9, 2 * 4, generator=gen) for _ in range(4))
    launched = []
    for name in ("head_state_kernel", "head_apply_kernel"):
        monkeypatch.setattr(runtime, name, _Recording(getattr(runtime, name), launched))
    qg, kg, vg = (x.requires_grad_() for x in (q, k, v))
    out = runtime.linear_attention(qg, kg, vg, 2, res=vg, out_l2=0.0, post=kg)
    assert len(launched) == 2 and launched[1]["OUT_NORM"] and launched[1]["POST"]
    torch.autograd.grad((out * dy).sum(), [qg, kg, vg])
    assert len(launched) == 7 and [kw.get("OUT_VJP", False) for kw in launched[2:]] == [
        True, False, False, False, False]


def test_output_vjp_is_taken_at_the_sum(runtime) -> None:
    """The check above can fail: the output normalisation's backward launch (OUT_VJP) gives
    the gradient of y = a S + r d for the gradient g of y's normalised rows (the product
    taken at y, of g), and d's, sum_t dy r (rows of partial sums over token tiles: 3 here);
    the same product with its point and gradient swapped, as a kernel reading x as the point
    would give it, misses it by far. Arguments the kernel cannot take together are refused."""
    gen = torch.Generator().manual_seed(15)
    a, r, g = (torch.randn(2, 37, 2 * 5, generator=gen, dtype=torch.float64) for _ in range(3))
    s = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    d = torch.rand(10, generator=gen, dtype=torch.float64) + 0.5
    y = runtime.naive_head_apply(a, s, False, res=r, res_scale=d, out_eps=None)
    y.requires_grad_()
    want = torch.autograd.grad((_l2_rows(y, 2, 1e-3) * g).sum(), y)[0]
    got, dd = runtime._rows_vjp_impl(a.float(), s.float(), False, None, r.float(), d.float(),
                                     1e-3, g.float())
    assert _rel(got, want) < 1e-5 and _rel(dd, (want * r).sum((0, 1))) < 1e-5
    assert _rel(runtime.naive_rows_vjp(g, y.detach(), 2, 1e-3), want) > 0.1
    x = a.float()
    with pytest.raises(ValueError, match="not both"):
        runtime.head_apply(x, s.float(), False, None, x, 0.0, None, None, 0.0)
    with pytest.raises(ValueError, match="needs out_eps"):  # post: after the normalisation
        runtime.head_apply(x, s.float(), False, None, None, 0.0, None, None, None, x)



@pytest.mark.parametrize("trans", [False, True], ids=["S", "S^T"])
@pytest.mark.parametrize("out_eps", [0.0, 0.05], ids=["eps-0", "eps"])
def test_epilogue_terms_against_the_naive_twin(runtime, trans: bool, out_eps) -> None:
    """head_apply's epilogue, rows(a S (or S^T) + res * d) + post, equals its naive twin's
    float64 autograd, values and the gradients of every input; a, res and post are slices of
    one wider tensor (strided views read in place)."""
    gen = torch.Generator().manual_seed(17)
    wide = torch.randn(2, 23, 3 * 10, generator=gen, dtype=torch.float64)
    state = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    scale = torch.rand(10, generator=gen, dtype=torch.float64) + 0.5
    dy = torch.randn(2, 23, 10, generator=gen, dtype=torch.float64)

    def run(wide, state, scale, head_apply):
        a, res, post = wide[..., :10], wide[..., 10:20], wide[..., 20:]
        out = head_apply(a, state, trans, None, None, 0.0, res, scale, out_eps, post)
        return (out, *torch.autograd.grad((out * dy.to(out.dtype)).sum(), [wide, state, scale]))

    leaves = [t.float().requires_grad_() for t in (wide, state, scale)]
    got = run(*leaves, runtime.head_apply)
    want = run(*(t.detach().double().requires_grad_() for t in leaves), runtime.naive_head_apply)
    for label, g, w in zip(("out", "wide", "state", "scale"), got, want, strict=True):
        assert _rel(g.detach(), w.detach()) < 1e-5, label

@pytest.mark.parametrize("trans", [False, True], ids=["S", "S^T"])
def test_a_scaled_term_without_the_output_normalisation(runtime, trans: bool) -> None:
    """head_apply(a, S, res=r, res_scale=d) = a S + r d without out_eps: values and the
    gradients of a, S, r and d against its naive twin's float64 autograd (d's gradient is
    sum_t dO r, made in torch where no normalisation's launch makes it)."""
    gen = torch.Generator().manual_seed(25)
    a, r, dy = (torch.randn(2, 19, 10, generator=gen, dtype=torch.float64) for _ in range(3))
    state = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    scale = torch.rand(10, generator=gen, dtype=torch.float64) + 0.5

    def run(leaves, head_apply):
        out = head_apply(leaves[0], leaves[1], trans, None, None, 0.0, leaves[2], leaves[3])
        return (out, *torch.autograd.grad((out * dy.to(out.dtype)).sum(), leaves))

    got = run([t.float().requires_grad_() for t in (a, state, r, scale)], runtime.head_apply)
    want = run([t.clone().requires_grad_() for t in (a, state, r, scale)],
               runtime.naive_head_apply)
    for label, g, w in zip(("out", "a", "state", "r", "d"), got, want, strict=True):
        assert _rel(g.detach(), w.detach()) < 1e-5, label


@pytest.mark.parametrize(("res_shape", "post_shape"), [((2, 1, 8), (1, 13, 8)), ((8,), (2, 1, 8))])
def test_broadcast_terms_are_read_in_place(runtime, res_shape, post_shape) -> None:
    """res and post of a shape that broadcasts to [B, N, C] give, values and gradients, what
    their contiguous broadcast copies give (the kernel reads them as stride-0 views); a
    res_scale that is not [C], or a term that does not broadcast, is refused."""
    gen = torch.Generator().manual_seed(16)
    q, k, v, dy = (torch.randn(2, 13, 2 * 4, generator=gen) for _ in range(4))
    r, p = torch.randn(res_shape, generator=gen), torch.randn(post_shape, generator=gen)

    def run(res, post):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, res, post)]
        out = runtime.linear_attention(*leaves[:3], 2, res=leaves[3], out_l2=0.0,
                                       post=leaves[4])
        return (out, *torch.autograd.grad((out * dy).sum(), leaves))

    full = run(r.expand(q.shape).contiguous(), p.expand(q.shape).contiguous())
    for label, got, want in zip(("out", "q", "k", "v", "res", "post"), run(r, p), full,
                                strict=True):
        assert torch.allclose(got, want.sum_to_size(got.shape), atol=1e-5), label
    with pytest.raises(ValueError, match="as a \\[C\\] vector"):
        runtime.head_apply(q, torch.zeros(1, 2, 4, 4), False, None, None, 0.0, v,
                           torch.ones(1, 1, 8), 0.0)
    with pytest.raises(RuntimeError, match="expand"):
        runtime.head_apply(q, torch.zeros(1, 2, 4, 4), False, None, None, 0.0,
                           torch.zeros(2, 13, 7), None, 0.0)

def test_int64_batch_offsets_compute_the_same(runtime, monkeypatch) -> None:
    """The kernels' I64 path (batch offsets in int64, taken where an offset reaches 2**31)
    gives what the int32 path gives."""
    gen = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 19, 2 * 8, generator=gen) for _ in range(3))
    want = runtime.linear_attention(q, k, v, 2)
    monkeypatch.setattr(runtime, "index_widths", lambda *tensors: {"I64": True, "WIDE": False})
    assert torch.allclose(runtime.linear_attention(q, k, v, 2), want, atol=1e-6)


def test_wide_sequences_take_int64_token_offsets(runtime, monkeypatch) -> None:
    """A sequence ([N, h*e] at its strides) spanning 2**31 elements (SimA's q, k, v, views of
    one [B, N, 3C] projection, past 1.86 M tokens of 384 channels): both kernels form token
    offsets in int64 (WIDE, with I64); the path, forced here on a short sequence, computes
    what the int32 one does, forward and backward, with a folded row normalisation."""
    meta = dict(device="meta", dtype=torch.bfloat16)
    assert runtime.index_widths(torch.empty(1, 2**21, 3 * 384, **meta)[..., :384])["WIDE"]
    assert not runtime.index_widths(torch.empty(64, 3136, 384, **meta))["WIDE"]
    gen = torch.Generator().manual_seed(19)
    q, k, v, dy = (torch.randn(2, 19, 2 * 8, generator=gen) for _ in range(4))

    def run():
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        out = runtime.linear_attention(qg, kg, vg, 2, q_l2=1e-3, k_l2=1e-3)
        return (out, *torch.autograd.grad((out * dy).sum(), [qg, kg, vg]))

    want = run()
    launched = []
    for name in ("head_state_kernel", "head_apply_kernel"):
        kernel = getattr(runtime, name)
        monkeypatch.setattr(runtime, name, _Recording(kernel, launched))
    monkeypatch.setattr(runtime, "index_widths", lambda *tensors: {"I64": True, "WIDE": True})
    for got, ref in zip(run(), want, strict=True):
        assert torch.allclose(got, ref, atol=1e-6)
    assert len(launched) == 6 and all(kw["WIDE"] and kw["I64"] for kw in launched)  # 2 + 4


class _Recording:
    """A Triton kernel whose launches append their keyword arguments to `launched`."""

    def __init__(self, kernel, launched: list) -> None:
        self.kernel, self.launched = kernel, launched

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.launched.append(kwargs)
            return self.kernel[grid](*args, **kwargs)
        return run


def test_the_attention_grids_hold_any_batch_on_axis_0(runtime, monkeypatch) -> None:
    """Every program (batch, head, token tile or chunk) on grid axis 0, which holds 2**31 - 1
    programs: axes 1 and 2 hold 65,535, which a batch times the heads may pass (8,192 images
    of 8 heads). Forward and backward, l1 norms included."""
    grids = []

    class Grids(_Recording):
        def __getitem__(self, grid):
            grids.append(grid)
            return super().__getitem__(grid)

    for name in ("head_state_kernel", "head_apply_kernel"):
        monkeypatch.setattr(runtime, name, Grids(getattr(runtime, name), []))
    monkeypatch.setattr(runtime, "_use_triton", lambda x: True)
    gen = torch.Generator().manual_seed(30)
    q, k, v, dy = (torch.randn(3, 9, 2 * 4, generator=gen) for _ in range(4))
    qg, kg, vg = (x.requires_grad_() for x in (q, k, v))
    out = runtime.linear_attention(qg, kg, vg, 2, q_l1=1e-3, k_l1=1e-3)
    torch.autograd.grad(out, [qg, kg, vg], dy)
    assert len(grids) >= 6 and all(len(g) == 1 for g in grids), grids


def test_a_width_that_heads_do_not_split_is_refused(runtime) -> None:
    """Width 9 in 2 heads: a ValueError, not a last channel of uninitialised memory."""
    q = torch.randn(2, 5, 9)
    with pytest.raises(ValueError, match="width 9 does not split into heads=2"):
        runtime.linear_attention(q, q, q, 2)


_SPLIT: dict = {}  # the generated module whose split_dot _split_dot_kernel calls

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:

    @triton.jit
    def _split_dot_kernel(a, s, o, B: tl.constexpr):
        r = tl.arange(0, B)
        b_a = tl.load(a + r[:, None] * B + r[None, :])
        b_s = tl.load(s + r[:, None] * B + r[None, :])
        tl.store(o + r[:, None] * B + r[None, :], _SPLIT["runtime"].split_dot(b_a, b_s))


def test_split_dot_keeps_the_fp32_state_to_the_square_of_the_unit_roundoff(runtime) -> None:
    """head_apply's 16-bit products (bf16 on a GPU) take the fp32 state in two parts of the
    operand's dtype: |a @ S - split_dot(a, S)| <= (u^2 + fp32's accumulation) |a| |S|, where
    a state rounded once errs by u |a| |S| (u = 2^-11 in fp16, the dtype the interpreter
    multiplies right; its bf16 products are wrong). The state's entries are 10 and up: in
    fp16 a smaller one's low part would be subnormal, in bf16 (fp32's exponents) it is not."""
    _SPLIT["runtime"] = runtime
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(16, 16, generator=gen).half()
    s = torch.randn(16, 16, generator=gen) * torch.logspace(1, 4, 16)  # columns 10 .. 1e4
    out = torch.empty(16, 16)
    _split_dot_kernel[(1,)](a, s, out, B=16)
    exact = a.double() @ s.double()
    size = a.double().abs() @ s.double().abs()
    once = a.double() @ s.half().double()  # the state rounded once
    u = 2.0 ** -11
    assert ((out.double() - exact).abs() <= (u * u + 16 * 2.0 ** -24) * size).all()
    assert ((once - exact).abs() > (u * u + 16 * 2.0 ** -24) * size).any()  # the check can fail
