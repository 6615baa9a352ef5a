'''Source text of the linear-attention kernels, pasted into generated modules that compute
`linear_attention` (the re-associated (Q K^T) V of SimA and Castling-ViT).

Per batch b and head g of width e, with A, B, Q: [N, e] slices of [B, N, h*e] tensors:

    head_state(A, B) = A^T B                  [e, e], fp32: a sum over all tokens
    head_apply(Q, S) = Q S   (or Q S^T)       [N, e]
    linear_attention(q, k, v) = head_apply(q, head_state(k, v))

Both are linear in each argument, so their derivatives are the same two maps again:
    d head_state: dA = head_apply(B, dS^T), dB = head_apply(A, dS)
    d head_apply: dQ = head_apply(dY, S^T), dS = head_state(Q, dY)   (transposed when S^T)
Heads are read in place through strides (no permuted copies); the state's token sum runs in
chunks whose partial states are added by torch (deterministic, no atomics). An l1
normalisation of q or k over tokens (SimA's) is a diagonal map on the state's rows, applied
there (`linear_attention`'s q_l1 / k_l1); an l2 normalisation of each row's head (Castling-ViT's)
is applied inside the kernels, which load each row's head slice whole (q_l2 / k_l2; the
backward's launches apply its vector-Jacobian product). `folded_normalizers` picks the nodes.
'''

from __future__ import annotations

from padre_compiler.ir.graph import Graph

KERNEL = '''
if triton is not None:

    @triton.jit
    def row_norms(b_x):
        """[BT] l2 norms of the rows of a [BT, BE] tile (one head's channels, zero-padded),
        in fp32."""
        b_f = b_x.to(tl.float32)
        return tl.sqrt(tl.sum(b_f * b_f, axis=1))


    @triton.jit
    def row_scales(b_x, eps):
        """[BT] 1 / (|x_t|_2 + eps) for the rows of a [BT, BE] tile, fp32; 0 where
        |x_t| + eps <= 0: a zero row at eps = 0 (the padding rows past N among them) stays
        zero, where the unfolded division gives NaN."""
        b_d = row_norms(b_x) + eps
        return tl.where(b_d > 0, 1. / tl.where(b_d > 0, b_d, 1.), 0.)


    @triton.jit(do_not_specialize=["N"])
    def head_state_kernel(
        a, b, p, N, H, s_ab, s_an, s_bb, s_bn, eps,
        E: tl.constexpr, IEEE: tl.constexpr, CHUNK: tl.constexpr, BT: tl.constexpr,
        BE: tl.constexpr,
        I64: tl.constexpr = False, A_NORM: tl.constexpr = False, WIDE: tl.constexpr = False,
    ):
        """Partial state of token chunk i: p[b, g, i] = sum_{t in chunk i} a[b, t, g]^T b[b, t, g]

        a, b: [B, N, H*E] (any batch/token strides, channel stride 1); p: [B, H, n_chunks, E, E]
        fp32 contiguous. [BE, BT] @ [BT, BE] products, fp32 accumulation. A_NORM: a's rows
        l2-normalised per head first, a[t, g] / (|a[t, g]|_2 + eps), rounded to a's dtype as a
        normalised copy would be.
        """
        i_k, i_bh = tl.program_id(0), tl.program_id(1)
        if I64:  # an offset reaches 2**31 (index_widths): batch and head offsets in int64
            i_bh = i_bh.to(tl.int64)
        i_b, i_h = i_bh // H, i_bh % H
        o_e = tl.arange(0, BE)
        m_e = o_e < E
        b_s = tl.zeros([BE, BE], dtype=tl.float32)  # [BE, BE] state of this chunk
        for t0 in range(0, CHUNK, BT):
            o_t = i_k * CHUNK + t0 + tl.arange(0, BT)
            if WIDE:  # a sequence spans 2**31 elements (index_widths): token offsets in int64
                o_t = o_t.to(tl.int64)
            m = (o_t < N)[:, None] & m_e[None, :]
            c_h = i_h * E + o_e[None, :]
            b_a = tl.load(a + i_b * s_ab + o_t[:, None] * s_an + c_h, mask=m, other=0.)  # [BT, BE]
            b_b = tl.load(b + i_b * s_bb + o_t[:, None] * s_bn + c_h, mask=m, other=0.)  # [BT, BE]
            if A_NORM:
                b_a = (b_a * row_scales(b_a, eps)[:, None]).to(b_a.dtype)
            if IEEE:
                b_s = tl.dot(tl.trans(b_a), b_b, b_s, input_precision="ieee")
            else:
                b_s = tl.dot(tl.trans(b_a), b_b, b_s)
        n_k = tl.num_programs(0)
        p_s = p + (i_bh * n_k + i_k) * E * E + o_e[:, None] * E + o_e[None, :]
        tl.store(p_s, b_s, mask=m_e[:, None] & m_e[None, :])


    @triton.jit(do_not_specialize=["N"])
    def head_apply_kernel(
        a, s, o, x, N, H, s_ab, s_an, s_xb, s_xn, eps,
        E: tl.constexpr, TRANS: tl.constexpr, F32: tl.constexpr, BT: tl.constexpr,
        BE: tl.constexpr,
        I64: tl.constexpr = False, A_NORM: tl.constexpr = False, VJP: tl.constexpr = False,
        WIDE: tl.constexpr = False,
    ):
        """o[b, t, g] = a[b, t, g] @ S[b, g] (S^T if TRANS) for one [BT] token tile.

        a, x: [B, N, H*E] (channel stride 1); s: [B, H, E, E] fp32 contiguous; o: [B, N, H*E]
        contiguous. [BT, BE] @ [BE, BE], fp32 accumulation; F32: fp32 operands (fp32 inputs,
        and fp16 ones, whose range cannot hold a state summed over N tokens), else bf16.
        A_NORM: a's rows l2-normalised per head first, a[t, g] / (n_t + eps), n_t = |a[t, g]|_2:
        a row scale of the product, applied to it in fp32. VJP: o is the gradient of x for the
        gradient G = a S of x's normalised rows, G / (n + eps) - x (x . G) / ((n + eps)^2 n)
        per row, n = |x[t, g]|_2 (a zero row's: 0 at eps = 0, and its second term 0); x is
        not read otherwise.
        """
        i_t, i_bh = tl.program_id(0), tl.program_id(1)
        if I64:  # an offset reaches 2**31 (index_widths): batch and head offsets in int64
            i_bh = i_bh.to(tl.int64)
        i_b, i_h = i_bh // H, i_bh % H
        o_t = i_t * BT + tl.arange(0, BT)
        if WIDE:  # a sequence spans 2**31 elements (index_widths): token offsets in int64
            o_t = o_t.to(tl.int64)
        o_e = tl.arange(0, BE)
        m_e = o_e < E
        m = (o_t < N)[:, None] & m_e[None, :]
        c_h = i_h * E + o_e[None, :]
        b_a = tl.load(a + i_b * s_ab + o_t[:, None] * s_an + c_h, mask=m, other=0.)  # [BT, BE]
        if TRANS:  # element [c, m] of S^T is S[m, c]
            p_s = s + i_bh * E * E + o_e[None, :] * E + o_e[:, None]
        else:
            p_s = s + i_bh * E * E + o_e[:, None] * E + o_e[None, :]
        b_s = tl.load(p_s, mask=m_e[:, None] & m_e[None, :], other=0.)  # [BE, BE] fp32
        if F32:
            b_o = tl.dot(b_a.to(tl.float32), b_s, input_precision="ieee")
        else:  # bf16 operands on tensor cores, fp32 accumulation
            b_o = tl.dot(b_a, b_s.to(b_a.dtype))
        if A_NORM:
            b_o = b_o * row_scales(b_a, eps)[:, None]
        if VJP:  # x -> x / (|x| + eps) per row, its vector-Jacobian product at b_o
            b_x = tl.load(x + i_b * s_xb + o_t[:, None] * s_xn + c_h, mask=m, other=0.)
            b_x = b_x.to(tl.float32)  # [BT, BE]
            b_r, b_n = row_scales(b_x, eps), row_norms(b_x)  # (x . g) = 0 where n = 0
            b_c = tl.sum(b_x * b_o, axis=1) * b_r * b_r / tl.where(b_n > 0, b_n, 1.)
            b_o = b_o * b_r[:, None] - b_x * b_c[:, None]
        tl.store(o + i_b * N * H * E + o_t[:, None] * (H * E) + c_h, b_o.to(o.dtype.element_ty),
                 mask=m)
'''

RUNTIME = '''
def head_config(n: int, e: int, gpu: bool) -> dict[str, int]:
    """Tiles of the head kernels: BE covers the head (>= 16 for tl.dot), BT tokens per step,
    CHUNK tokens per state program (enough programs to fill a GPU at long N). On sm_90 these
    compile without spills up to e = 64 (tests/triton/test_triton_aot.py)."""
    be = max(16, next_power_of_2(e))
    bt = 64 if gpu else 16
    chunk = max(bt, min(1024 if gpu else 64, next_power_of_2(n)))
    return {"BE": be, "BT": bt, "CHUNK": chunk, "num_warps": 8 if gpu else 1}


def naive_row_scale(a: torch.Tensor, heads: int, eps: float) -> torch.Tensor:
    """[B, N, h, 1]: 1 / (|a[t, g]|_2 + eps), the scale of each row's head slice under the l2
    normalisation (0 for a zero row at eps = 0, as the kernels have it)."""
    bsz, n, w = a.shape
    d = a.reshape(bsz, n, heads, w // heads).norm(dim=-1, keepdim=True) + eps
    return torch.where(d > 0, 1 / d.where(d > 0, 1), 0)


def naive_rows_vjp(x: torch.Tensor, g: torch.Tensor, heads: int, eps: float) -> torch.Tensor:
    """The gradient of x for the gradient g of its l2-normalised rows: per row and head,
    g / (n + eps) - x (x . g) / ((n + eps)^2 n), n = |x|_2 (a zero row's: 0 at eps = 0)."""
    bsz, n, w = x.shape
    xh, gh = (t.reshape(bsz, n, heads, w // heads) for t in (x, g))
    norm, scale = xh.norm(dim=-1, keepdim=True), naive_row_scale(x, heads, eps)
    c = (xh * gh).sum(-1, keepdim=True) * scale * scale / norm.where(norm > 0, 1)
    return (gh * scale - xh * c).reshape(bsz, n, w)


def naive_head_state(a, b, heads: int, a_eps: float | None = None):
    """Naive twin of head_state_kernel: [B, N, h*e] x2 -> [B, h, e, e] (fp32 or fp64)."""
    bsz, n, w = a.shape
    dt = torch.float64 if a.dtype == torch.float64 else torch.float32
    ah, bh = (t.to(dt).reshape(bsz, n, heads, w // heads) for t in (a, b))
    if a_eps is not None:  # normalised rows, rounded to a's dtype as the kernel rounds them
        ah = (ah * naive_row_scale(a.to(dt), heads, a_eps)).to(a.dtype).to(dt)
    return torch.einsum("bthc,bthm->bhcm", ah, bh).contiguous()


def naive_head_apply(a, s, trans: bool, a_eps: float | None = None,
                     vjp_x: torch.Tensor | None = None, vjp_eps: float = 0.0):
    """Naive twin of head_apply_kernel: [B, N, h*e], [B, h, e, e] -> [B, N, h*e]."""
    bsz, n, w = a.shape
    heads = s.shape[1]
    dt = torch.float64 if a.dtype == torch.float64 else torch.float32
    st = s.to(dt).transpose(-2, -1) if trans else s.to(dt)
    out = torch.einsum("bthc,bhcm->bthm", a.to(dt).reshape(bsz, n, heads, w // heads), st)
    if a_eps is not None:  # the row scale of the normalised a, applied to the product
        out = out * naive_row_scale(a.to(dt), heads, a_eps)
    out = out.reshape(bsz, n, w)
    if vjp_x is not None:
        out = naive_rows_vjp(vjp_x.to(dt), out, heads, vjp_eps)
    return out.to(a.dtype)


def _head_state_impl(a: torch.Tensor, b: torch.Tensor, heads: int,
                     a_eps: float | None = None) -> torch.Tensor:
    if not _use_triton(a):
        return naive_head_state(a, b, heads, a_eps)
    bsz, n, w = a.shape
    e = w // heads
    a, b = channel_rows(a), channel_rows(b)
    cfg = head_config(n, e, a.is_cuda)
    chunks = cdiv(n, cfg["CHUNK"])
    parts = torch.empty((bsz, heads, chunks, e, e), device=a.device, dtype=torch.float32)
    head_state_kernel[(chunks, bsz * heads)](
        a, b, parts, n, heads, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        0.0 if a_eps is None else a_eps,
        E=e, IEEE=a.dtype == torch.float32, CHUNK=cfg["CHUNK"], BT=cfg["BT"], BE=cfg["BE"],
        A_NORM=a_eps is not None, **index_widths(a, b, parts), num_warps=cfg["num_warps"])
    return parts.sum(2)


def _head_apply_impl(a: torch.Tensor, s: torch.Tensor, trans: bool, a_eps: float | None = None,
                     vjp_x: torch.Tensor | None = None, vjp_eps: float = 0.0) -> torch.Tensor:
    if a_eps is not None and vjp_x is not None:  # the kernel takes one eps
        raise ValueError("head_apply normalises its operand (a_eps) or applies a "
                         "normalisation's vector-Jacobian product (vjp_x), not both")
    if not _use_triton(a):
        return naive_head_apply(a, s, trans, a_eps, vjp_x, vjp_eps)
    bsz, n, w = a.shape
    heads = s.shape[1]
    e = w // heads
    a, vjp_x = channel_rows(a), channel_rows(vjp_x)
    x = a if vjp_x is None else vjp_x  # never read without VJP
    s = s.float().contiguous()
    out = torch.empty((bsz, n, w), device=a.device, dtype=a.dtype)
    cfg = head_config(n, e, a.is_cuda)
    head_apply_kernel[(cdiv(n, cfg["BT"]), bsz * heads)](
        a, s, out, x, n, heads, a.stride(0), a.stride(1), x.stride(0), x.stride(1),
        vjp_eps if a_eps is None else a_eps,
        E=e, TRANS=trans, F32=a.dtype != torch.bfloat16, BT=cfg["BT"], BE=cfg["BE"],
        A_NORM=a_eps is not None, VJP=vjp_x is not None, **index_widths(a, out, vjp_x, s),
        num_warps=cfg["num_warps"])
    return out


def _state_setup(ctx, inputs, output) -> None:
    a, b, heads, a_eps = inputs
    ctx.save_for_backward(a, b)
    ctx.a_eps = a_eps


def _state_backward(ctx, ds):
    """S = Â^T B, Â = rows(A) or A: dÂ = B dS^T (then through rows' vector-Jacobian product,
    in the same kernel), dB = Â dS."""
    a, b = ctx.saved_tensors
    apply = (_head_apply_impl if getattr(ctx, "eager", False)
             else torch.ops.padre_triton.head_apply_v2)
    normed = ctx.a_eps is not None
    da = apply(b, ds, True, None, a if normed else None, ctx.a_eps if normed else 0.0)
    return da.to(a.dtype), apply(a, ds, False, ctx.a_eps).to(b.dtype), None, None


def _apply_setup(ctx, inputs, output) -> None:
    a, s, trans, a_eps, vjp_x, _ = inputs
    if vjp_x is not None:
        raise NotImplementedError(
            "head_apply with vjp_x is a backward's own step: its double backward is not "
            "derived (a folded row normalisation's second derivative)")
    ctx.save_for_backward(a, s)
    ctx.trans, ctx.a_eps = trans, a_eps


def _apply_backward(ctx, do, *_):
    """Y = Â S (S^T if trans), Â = rows(A) or A: dÂ = dY S^T (then through rows'
    vector-Jacobian product, in the same kernel), dS = Â^T dY (its transpose if S^T)."""
    a, s = ctx.saved_tensors
    heads = s.shape[1]
    eager = getattr(ctx, "eager", False)
    apply = _head_apply_impl if eager else torch.ops.padre_triton.head_apply_v2
    state = _head_state_impl if eager else torch.ops.padre_triton.head_state_v2
    normed = ctx.a_eps is not None
    da = apply(do, s, not ctx.trans, None, a if normed else None,
               ctx.a_eps if normed else 0.0).to(a.dtype)
    ds = state(a, do, heads, ctx.a_eps)
    return (da, (ds.transpose(-2, -1) if ctx.trans else ds).to(s.dtype), None, None, None,
            None)


def _register_head_ops():
    """torch.library custom ops (+ fake kernels + autograd), defined once per process."""
    try:
        return torch.ops.padre_triton.head_state_v2, torch.ops.padre_triton.head_apply_v2
    except AttributeError:
        pass
    state = torch.library.custom_op("padre_triton::head_state_v2", mutates_args=())(
        _head_state_impl)
    apply = torch.library.custom_op("padre_triton::head_apply_v2", mutates_args=())(
        _head_apply_impl)

    @state.register_fake
    def _(a, b, heads, a_eps=None):
        bsz, _, w = a.shape
        e = w // heads
        dt = torch.float64 if a.dtype == torch.float64 else torch.float32
        return a.new_empty((bsz, heads, e, e), dtype=dt)

    @apply.register_fake
    def _(a, s, trans, a_eps=None, vjp_x=None, vjp_eps=0.0):
        return a.new_empty(a.shape)

    state.register_autograd(_state_backward, setup_context=_state_setup)
    apply.register_autograd(_apply_backward, setup_context=_apply_setup)
    return torch.ops.padre_triton.head_state_v2, torch.ops.padre_triton.head_apply_v2


head_state, head_apply = (
    custom_op_caller(op, impl, setup, backward) for op, impl, setup, backward in zip(
        _register_head_ops(), (_head_state_impl, _head_apply_impl),
        (_state_setup, _apply_setup), (_state_backward, _apply_backward), strict=True))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                     weight: torch.Tensor | None = None, q_l1: float | None = None,
                     k_l1: float | None = None, q_l2: float | None = None,
                     k_l2: float | None = None) -> torch.Tensor:
    """Per head g: q_g (W_g ⊙ k_g^T v_g), W [h*e*e] slot-wise weights (None: 1); [B, N, h*e]
    each -> [B, N, h*e]. Two kernels: the [e, e] state (a token sum), then its product with q;
    the weighting, on the [B, h, e, e] state, in torch.

    q_l1 / k_l1 (eps, or None): q / k l1-normalised over tokens first, x[t, c] / (n[c] + eps)
    with n[c] = sum_t |x[t, c]|. Each such map is diag(1 / (n + eps)) on the right of q or k,
    so it scales row c of the state: (q D_q) ((k D_k)^T v) = q (D_q D_k (k^T v)). Folded there,
    a normalisation costs one reduction over q or k instead of three passes (abs, sum, div)
    and a normalised copy.

    q_l2 / k_l2 (eps, or None): q / k l2-normalised per token and head first, x[t, g] /
    (|x[t, g]|_2 + eps) (Castling-ViT's): the kernels, which load each row's head slice whole,
    normalise it there (k in the state's product; q as a row scale of q S), and their
    backward launches apply the normalisation's vector-Jacobian product to the gradients
    they write. No normalised copy is made."""
    state = head_state(k, v, heads, k_l2)
    bsz, _, w = q.shape
    e = w // heads
    if weight is not None:
        state = state * weight.view(1, heads, e, e)
    for x, eps in ((q, q_l1), (k, k_l1)):
        if eps is not None:  # [B, h*e] norms -> [B, h, e, 1] row scales
            state = state / (L1Tokens.apply(x, state.dtype) + eps).view(bsz, heads, e, 1)
    return head_apply(q, state, False, q_l2)


class L1Tokens(torch.autograd.Function):
    """n[b, c] = sum_t |x[b, t, c]| in `dtype` (the state's: fp32, or fp64 for fp64 x), [B, N, C]
    -> [B, C]; dx = sgn(x) dn, made in x's dtype (two passes; torch's own vector_norm backward
    adds a cast pass from `dtype`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.linalg.vector_norm(x, 1, dim=1, dtype=dtype)

    @staticmethod
    def backward(ctx, dn: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return x.sgn().mul_(dn.to(x.dtype)[:, None, :]), None
'''

# normalisations linear_attention folds, by kind: the suffix of its keyword (q_l1, k_l2, ...)
FOLDABLE = {"l1_tokens": "l1", "l2_rows": "l2"}
# where each goes, by suffix (the generated code's comments)
FOLD_NOTES = {"l1": "l1-normalised over tokens in the state",
              "l2": "l2-normalised per row and head in the kernels"}


def folded_normalizers(g: Graph) -> dict[int, str]:
    """{normalize node: its linear_attention keyword} for each normalisation whose only reader
    is a linear attention, as its q or as its k, and that the attention folds: l1 over tokens
    ("q_l1", "k_l1": applied to the state) and l2 over each row's head ("q_l2", "k_l2":
    applied in the kernels; its heads must be the attention's). The normalised tensor is
    never made."""
    folded = {}
    for nid, node, inputs in g.items():
        if node.op != "linear_attention":
            continue
        for src, role in zip(inputs[:2], ("q", "k"), strict=True):
            norm = g.node(src)
            if (norm.op == "normalize" and norm.a["kind"] in FOLDABLE
                    and (norm.a["kind"] != "l2_rows" or norm.a["heads"] == node.a["heads"])
                    and g.users(src) == [nid] and inputs.count(src) == 1):
                folded[src] = f"{role}_{FOLDABLE[norm.a['kind']]}"
    return folded


def fold_note(keywords: list[str]) -> str:
    """What the folded normalisations (linear_attention keywords) do, for a comment:
    'q and k l1-normalised over tokens in the state'."""
    roles: dict[str, list[str]] = {}
    for kw in keywords:
        role, suffix = kw.split("_")
        roles.setdefault(FOLD_NOTES[suffix], []).append(role)
    return "; ".join(f"{' and '.join(r)} {where}" for where, r in roles.items())


# tl.dot tiles per kernel, (batch, M, N, K), for the static GPU-legality check (one entry per
# call site; the generated module carries them as DOT_TILES)
DOT_TILES = {"head_state_kernel": [(1, "BE", "BE", "BT"), (1, "BE", "BE", "BT")],
             "head_apply_kernel": [(1, "BT", "BE", "BE"), (1, "BT", "BE", "BE")]}
