'''Source text of the linear-attention kernels, pasted into generated modules that compute
`linear_attention` (the re-associated (Q K^T) V of SimA and Castling-ViT).

Per batch b and head g of width e, with A, B, Q: [N, e] slices of [B, N, h*e] tensors:

    head_state(A, B) = A^T B                  [e, e], fp32: a sum over all tokens
    head_apply(Q, S) = Q S   (or Q S^T)       [N, e]
    linear_attention(q, k, v) = head_apply(q, head_state(k, v))   (head_state gives (S,) in code)

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

from dataclasses import dataclass

from padre_compiler.ir.graph import Graph

# the generated module's constant naming this family's torch.ops namespace
OPS_NAME = "ATTENTION_OPS"

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


    @triton.jit
    def rows_vjp(b_x, b_g, eps):
        """[BT, BE] gradient of x for the gradient g of its normalised rows x / (n + eps),
        n = |x_t|_2: g r - x (x . g) r^2 / n per row, r = 1 / (n + eps) (row_scales: a zero
        row's is 0 at eps = 0; its second term 0 as x is 0), fp32 x and g."""
        b_r, b_n = row_scales(b_x, eps), row_norms(b_x)
        b_c = tl.sum(b_x * b_g, axis=1) * b_r * b_r / tl.where(b_n > 0, b_n, 1.)
        return b_g * b_r[:, None] - b_x * b_c[:, None]


    @triton.jit
    def split_dot(b_a, b_s):
        """[BT, BE] @ [BE, BE] fp32: b_a (16-bit) times b_s (fp32) as two products of b_a's
        dtype into one fp32 accumulator, b_s = hi + lo + r with hi = b_s rounded to that
        dtype and lo = (b_s - hi) rounded: |r| <= u^2 |b_s| (u its unit roundoff, 2^-16
        relative in bf16), where one rounded b_s would err by u |b_s| in every product."""
        b_hi = b_s.to(b_a.dtype)
        b_lo = (b_s - b_hi.to(tl.float32)).to(b_a.dtype)
        return tl.dot(b_a, b_lo, tl.dot(b_a, b_hi))


    @triton.jit(do_not_specialize=["N"])
    def head_state_kernel(
        a, b, p, N, H, s_ab, s_an, s_bb, s_bn, eps,
        E: tl.constexpr, IEEE: tl.constexpr, CHUNK: tl.constexpr, BT: tl.constexpr,
        BE: tl.constexpr,
        I64: tl.constexpr = False, A_NORM: tl.constexpr = False, WIDE: tl.constexpr = False,
        A_L1: tl.constexpr = False,
    ):
        """Partial state of token chunk i: p[b, g, i] = sum_{t in chunk i} a[b, t, g]^T b[b, t, g]

        a, b: [B, N, H*E] (any batch/token strides, channel stride 1); p: [B, H, n_chunks, E, E]
        fp32 contiguous ([B, H, n_chunks, E + 1, E] with A_L1). [BE, BT] @ [BT, BE] products,
        fp32 accumulation. A_NORM: a's rows l2-normalised per head first,
        a[t, g] / (|a[t, g]|_2 + eps), rounded to a's dtype as a normalised copy would be.
        A_L1: also the chunk's terms of a's l1 norms over tokens, sum_{t in chunk i} |a[b, t, g]|,
        from the tiles the product loads, in row E of the chunk's block (one sum over chunks
        then gives the state and the norms).
        """
        n_k = tl.cdiv(N, CHUNK)
        i_bh, i_k = outer_tile(n_k, I64)  # a batch and head's chunks
        i_b, i_h = i_bh // H, i_bh % H
        o_e = tl.arange(0, BE)
        m_e = o_e < E
        b_s = tl.zeros([BE, BE], dtype=tl.float32)  # [BE, BE] state of this chunk
        b_n = tl.zeros([BT, BE], dtype=tl.float32)  # A_L1: sum of |a| over the chunk's tiles
        for t0 in range(0, tl.minimum(CHUNK, N - i_k * CHUNK), BT):  # the last chunk may be short
            o_t = i_k * CHUNK + t0 + tl.arange(0, BT)
            if WIDE:  # a sequence spans 2**31 elements (index_widths): token offsets in int64
                o_t = o_t.to(tl.int64)
            m = (o_t < N)[:, None] & m_e[None, :]
            c_h = i_h * E + o_e[None, :]
            b_a = tl.load(a + i_b * s_ab + o_t[:, None] * s_an + c_h, mask=m, other=0.)  # [BT, BE]
            b_b = tl.load(b + i_b * s_bb + o_t[:, None] * s_bn + c_h, mask=m, other=0.)  # [BT, BE]
            if A_NORM:
                b_a = (b_a * row_scales(b_a, eps)[:, None]).to(b_a.dtype)
            if A_L1:  # padding rows and channels load 0
                b_n += tl.abs(b_a.to(tl.float32))
            if IEEE:
                b_s = tl.dot(tl.trans(b_a), b_b, b_s, input_precision="ieee")
            else:
                b_s = tl.dot(tl.trans(b_a), b_b, b_s)
        if A_L1:  # [E + 1, E] blocks: the state's rows, then the norms
            p = p + (i_bh * n_k + i_k) * (E + 1) * E
            tl.store(p + E * E + o_e, tl.sum(b_n, axis=0), mask=m_e)
        else:
            p = p + (i_bh * n_k + i_k) * E * E
        tl.store(p + o_e[:, None] * E + o_e[None, :], b_s, mask=m_e[:, None] & m_e[None, :])


    @triton.jit(do_not_specialize=["N"])
    def head_apply_kernel(
        a, s, o, x, r, d, dd, N, H, s_ab, s_an, s_xb, s_xn, s_rb, s_rn, s_db, eps, out_eps,
        E: tl.constexpr, TRANS: tl.constexpr, F32: tl.constexpr, BT: tl.constexpr,
        BE: tl.constexpr,
        I64: tl.constexpr = False, A_NORM: tl.constexpr = False, VJP: tl.constexpr = False,
        WIDE: tl.constexpr = False, RES: tl.constexpr = False, RES_SCALE: tl.constexpr = False,
        OUT_NORM: tl.constexpr = False, OUT_VJP: tl.constexpr = False,
        POST: tl.constexpr = False, RES_SGN: tl.constexpr = False,
    ):
        """o[b, t, g] = a[b, t, g] @ S[b, g] (S^T if TRANS) for one [BT] token tile, with an
        epilogue: y = a S (+ r (* d)), then o = rows(y) (+ x) or a vector-Jacobian product.

        a, x, r: [B, N, H*E] (channel stride 1; x's and r's token strides may be 0, a
        broadcast term); s: [B, H, E, E] fp32 contiguous; d: [H*E], or [B, H*E] (batch stride
        s_db; 0 for one vector); o: [B, N, H*E] contiguous; dd: [B * token tiles, H*E] fp32.
        [BT, BE] @ [BE, BE], fp32 accumulation; F32: fp32 operands (fp32 inputs, and fp16
        ones, whose range cannot hold a state summed over N tokens), else bf16 operands with
        the state in two bf16 parts (`split_dot`: to 2^-16, as the fp32 state). Each row's
        head slice is in one tile, so the l2 normalisations of rows,
        x[t, g] / (|x[t, g]|_2 + eps), apply here (eps: A_NORM's or VJP's, one at a time):
        A_NORM: a's rows normalised first (eps): a row scale of the product, in fp32.
        VJP: o is the gradient of x (the point) for the gradient a S of x's normalised rows.
        RES: y = a S + r, RES_SCALE: + r * d (d per channel); RES_SGN: r's signs (-1, 0, 1)
        in place of r (the l1 norm's vector-Jacobian product, sgn(r) * dn).
        OUT_NORM: o = y's rows normalised (out_eps); with OUT_VJP: o is the gradient of y for
        the gradient x of its normalised rows, and (RES_SCALE) the program stores its
        tile's terms of d's gradient, sum_t o[t] r[t], in its own row of dd (torch sums them).
        POST: x (a term) added last, o = rows(y) + x.
        """
        tl.static_assert((RES or not (RES_SCALE or RES_SGN)) and (OUT_NORM or not OUT_VJP),
                         "RES_SCALE and RES_SGN modify r (RES); OUT_VJP is OUT_NORM's product")
        tl.static_assert(OUT_NORM or not POST, "POST is added to the normalised rows (OUT_NORM)")
        tl.static_assert((VJP + POST + OUT_VJP) <= 1 and not (VJP and (A_NORM or OUT_NORM)),
                         "x is one of VJP's point, POST's term and OUT_VJP's gradient; eps is "
                         "A_NORM's or VJP's, and a VJP takes no output epilogue")
        tiles = tl.cdiv(N, BT)
        i_bh, i_t = outer_tile(tiles, I64)  # a batch and head's token tiles
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
            b_o = split_dot(b_a, b_s)
        if A_NORM:
            b_o = b_o * row_scales(b_a, eps)[:, None]
        if RES:  # padding rows and channels load 0, so they add nothing to a row's norm
            b_r = tl.load(r + i_b * s_rb + o_t[:, None] * s_rn + c_h, mask=m, other=0.)
            b_r = b_r.to(tl.float32)  # [BT, BE]
            if RES_SGN:
                b_r = tl.where(b_r > 0, 1., tl.where(b_r < 0, -1., 0.))
            if RES_SCALE:
                b_d = tl.load(d + i_b * s_db + c_h, mask=m_e[None, :], other=0.)
                b_o = b_o + b_r * b_d.to(tl.float32)
            else:
                b_o = b_o + b_r
        if VJP or POST or OUT_VJP:
            b_x = tl.load(x + i_b * s_xb + o_t[:, None] * s_xn + c_h, mask=m, other=0.)
            b_x = b_x.to(tl.float32)  # [BT, BE]
        if VJP:  # x -> x / (|x| + eps) per row, its vector-Jacobian product at a S
            b_o = rows_vjp(b_x, b_o, eps)
        if OUT_NORM:
            if OUT_VJP:  # y -> y / (|y| + out_eps) per row, its product at x
                b_o = rows_vjp(b_o, b_x, out_eps)
                if RES_SCALE:  # padding rows hold r = 0
                    p_dd = dd + (i_b * tiles + i_t) * (H * E) + c_h
                    tl.store(p_dd, tl.sum(b_o * b_r, axis=0)[None, :], mask=m_e[None, :])
            else:
                b_o = b_o * row_scales(b_o, out_eps)[:, None]
        if POST:
            b_o = b_o + b_x
        tl.store(o + i_b * N * H * E + o_t[:, None] * (H * E) + c_h, b_o.to(o.dtype.element_ty),
                 mask=m)
'''

RUNTIME = '''
@functools.cache  # per launch shape: every launch asks (read-only)
def head_config(n: int, e: int, gpu: bool, cuda_core_apply: bool = False) -> dict[str, int]:
    """Tiles of the head kernels: BE covers the head (>= 16 for tl.dot), BT tokens per step,
    CHUNK tokens per state program (enough programs to fill a GPU at long N). cuda_core_apply:
    a head_apply whose products run in fp32 on CUDA cores (F32: fp32 and fp16 inputs), with
    or without an epilogue, on 32-token tiles: a [64, 64] fp32 one spills under the output
    epilogue, where bf16 products (tensor cores) keep 64 tokens. For sm_90 these tiles
    compile without spills at e = 48 (BE = 64) with every epilogue, and plain at e = 128
    (BE = 128) (tests/triton/test_triton_aot.py)."""
    be = max(16, next_power_of_2(e))
    bt = (32 if cuda_core_apply else 64) if gpu else 16
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


def state_dtype(a: torch.Tensor) -> torch.dtype:
    """The dtype of the state and the norms: fp32, fp64 for fp64 a."""
    return torch.float64 if a.dtype == torch.float64 else torch.float32


def l1_tokens(a: torch.Tensor, heads: int) -> torch.Tensor:
    """n[b, g, c] = sum_t |a[b, t, g, c]|: [B, N, h*e] -> [B, h, e] in the state's dtype (one
    pass)."""
    return torch.linalg.vector_norm(a, 1, dim=1, dtype=state_dtype(a)).view(
        a.shape[0], heads, a.shape[2] // heads)  # not -1: an empty batch leaves it open


def l1_denominators(n: torch.Tensor, eps: float) -> torch.Tensor:
    """[B, h, e] l1 norms -> [B, h, e, 1]: n + eps, what a state's rows are divided by. A map
    a -> a diag(1 / (n + eps)) on the left of a state S divides S's rows: (a D) S = a (D S)."""
    return (n + eps)[..., None]


def l1_scaled_state(a: torch.Tensor, s: torch.Tensor, trans: bool, eps: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D M, D's denominators [B, h, e, 1]), M = s (s^T if trans), D = diag(1 / (n + eps)) from
    a's l1 norms over tokens (one pass over a): D M is the state that a's unnormalised rows
    multiply ([B, h, e, e]; transposed strides where trans)."""
    m = s.transpose(-2, -1) if trans else s
    den = l1_denominators(l1_tokens(a, s.shape[1]), eps)
    return m / den, den


def l1_backward(d_scaled: torch.Tensor, den: torch.Tensor, scaled: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dX, dn) for X' = X / den (rows of [B, h, e, e] divided by den = n + eps, [B, h, e, 1])
    and its gradient dX': dX = dX' / den, dn = -sum_m dX ∘ X' on each row ([B, h*e]), whose
    term sgn(a) dn the launch writing a's gradient adds (res_sgn)."""
    dx = d_scaled / den
    return dx, (dx * scaled).sum(-1).flatten(1).neg_()


def naive_head_state(a, b, heads: int, a_eps: float | None = None, a_l1: float | None = None):
    """Naive twin of head_state_kernel: [B, N, h*e] x2 -> [B, h, e, e] (fp32 or fp64); with
    a_l1, a's columns l1-normalised over tokens first (the state's rows scaled)."""
    bsz, n, w = a.shape
    dt = state_dtype(a)
    ah, bh = (t.to(dt).reshape(bsz, n, heads, w // heads) for t in (a, b))
    if a_eps is not None:  # normalised rows, rounded to a's dtype as the kernel rounds them
        ah = (ah * naive_row_scale(a.to(dt), heads, a_eps)).to(a.dtype).to(dt)
    state = torch.einsum("bthc,bthm->bhcm", ah, bh)
    if a_l1 is not None:
        state = state / l1_denominators(l1_tokens(a, heads), a_l1)
    return state.contiguous()


def naive_head_apply(a, s, trans: bool, a_eps: float | None = None,
                     vjp_x: torch.Tensor | None = None, vjp_eps: float = 0.0,
                     res: torch.Tensor | None = None, res_scale: torch.Tensor | None = None,
                     out_eps: float | None = None, post: torch.Tensor | None = None,
                     res_sgn: bool = False, a_l1: float | None = None,
                     out_grad: torch.Tensor | None = None):
    """Naive twin of head_apply_kernel: [B, N, h*e], [B, h, e, e] -> [B, N, h*e]; with
    _head_apply_impl's arguments (a and post by name, their kernel's x by role)."""
    bsz, n, w = a.shape
    heads = s.shape[1]
    dt = state_dtype(a)
    if a_l1 is not None:
        (s, _), trans = l1_scaled_state(a, s.to(dt), trans, a_l1), False
    st = s.to(dt).transpose(-2, -1) if trans else s.to(dt)
    out = torch.einsum("bthc,bhcm->bthm", a.to(dt).reshape(bsz, n, heads, w // heads), st)
    if a_eps is not None:  # the row scale of the normalised a, applied to the product
        out = out * naive_row_scale(a.to(dt), heads, a_eps)
    out = out.reshape(bsz, n, w)
    if res is not None:
        r = res.to(dt).sgn() if res_sgn else res.to(dt)
        if res_scale is not None:  # [C], or [B, C]
            r = r * (res_scale.to(dt) if res_scale.dim() == 1 else res_scale.to(dt)[:, None])
        out = out + r
    if vjp_x is not None:
        out = naive_rows_vjp(vjp_x.to(dt), out, heads, vjp_eps)
    if out_grad is not None:
        out = naive_rows_vjp(out, out_grad.to(dt), heads, out_eps)
    elif out_eps is not None:
        out = (out.reshape(bsz, n, heads, w // heads)
               * naive_row_scale(out, heads, out_eps)).reshape(bsz, n, w)
    if post is not None:
        out = out + post.to(dt)
    return out.to(a.dtype)


@on_input_device
def _head_state_impl(a: torch.Tensor, b: torch.Tensor, heads: int, a_eps: float | None = None,
                     a_l1: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, n): S = â^T b per batch and head, â = a with its rows l2-normalised per head
    (a_eps) or its columns l1-normalised over tokens (a_l1: S's rows divided by n + a_l1);
    n = a's l1 norms over tokens ([B, h, e], made by the same kernel) with a_l1, else empty.
    n is for the backward."""
    if a_eps is not None and a_l1 is not None:
        raise ValueError("head_state normalises a's rows (a_eps) or its columns over tokens "
                         "(a_l1), not both")
    if not _use_triton(a):
        n = a.new_empty(0, dtype=state_dtype(a)) if a_l1 is None else l1_tokens(a, heads)
        return naive_head_state(a, b, heads, a_eps, a_l1), n
    bsz, n, w = a.shape
    e = w // heads
    a, b = channel_rows(a), channel_rows(b)
    cfg = head_config(n, e, a.is_cuda)
    chunks = cdiv(n, cfg["CHUNK"])
    rows = e if a_l1 is None else e + 1  # A_L1: the norms in a last row
    parts = torch.empty((bsz, heads, chunks, rows, e), device=a.device, dtype=torch.float32)
    start(head_state_kernel, (bsz * heads * chunks,))(
        a, b, parts, n, heads, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        0.0 if a_eps is None else a_eps,
        E=e, IEEE=a.dtype == torch.float32, CHUNK=cfg["CHUNK"], BT=cfg["BT"], BE=cfg["BE"],
        A_NORM=a_eps is not None, A_L1=a_l1 is not None, **index_widths(a, b, parts),
        num_warps=cfg["num_warps"])
    sums = parts.sum(2)  # [B, h, rows, e]
    if a_l1 is None:
        return sums, parts.new_empty(0)
    norms = sums[:, :, e].contiguous()  # an output of its own, not a view into the sums
    return sums[:, :, :e] / l1_denominators(norms, a_l1), norms


def epilogue_terms(a: torch.Tensor, res: torch.Tensor | None, res_scale: torch.Tensor | None,
                   out_eps: float | None, post: torch.Tensor | None, res_sgn: bool = False
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(res, post) as [B, N, C] views (a broadcast term's stride-0 dimensions read in place),
    after checking the epilogue's arguments against a ([B, N, C])."""
    if post is not None and out_eps is None:
        raise ValueError("head_apply's post is added after its output normalisation: it needs "
                         "out_eps")
    if res_sgn and res is None:
        raise ValueError("head_apply's res_sgn takes the signs of res: it needs res")
    # a [B, C] scale (a vector per batch) only for signs: the backward's own step
    shapes = [list(a.shape[-1:])] + ([[a.shape[0], a.shape[-1]]] if res_sgn else [])
    if res_scale is not None and (res is None or list(res_scale.shape) not in shapes):
        raise ValueError(f"head_apply's res_scale scales res, as a [C] vector (C = "
                         f"{a.shape[-1]}{'; or [B, C] with res_sgn' if res_sgn else ''}); got "
                         f"{list(res_scale.shape)}" + ("" if res is not None else " and no res"))
    return (None if res is None else res.expand(a.shape),
            None if post is None else post.expand(a.shape))


@on_input_device
def _head_apply_impl(a: torch.Tensor, s: torch.Tensor, trans: bool, a_eps: float | None = None,
                     vjp_x: torch.Tensor | None = None, vjp_eps: float = 0.0,
                     res: torch.Tensor | None = None, res_scale: torch.Tensor | None = None,
                     out_eps: float | None = None, post: torch.Tensor | None = None,
                     res_sgn: bool = False, a_l1: float | None = None) -> torch.Tensor:
    """â S (S^T if trans), â = a with its rows l2-normalised per head (a_eps) or its columns
    l1-normalised over tokens (a_l1: the state's rows scaled, one reduction over a), else a;
    plus res * res_scale (res_sgn: sgn(res) * res_scale, res_scale [C] or [B, C]); with
    out_eps the output rows(â S + res * res_scale) + post, rows the l2 normalisation per row
    and head (res, res_scale and post optional); or, with vjp_x, the gradient through vjp_x's
    normalised rows (vjp_eps) for the gradient a S of them."""
    if sum(t is not None for t in (a_eps, vjp_x, a_l1)) > 1:  # one normalisation of a
        raise ValueError("head_apply normalises its operand's rows (a_eps) or its columns "
                         "(a_l1), or applies a normalisation's vector-Jacobian product "
                         "(vjp_x): one of them")
    if vjp_x is not None and out_eps is not None:
        raise ValueError("head_apply applies a normalisation's vector-Jacobian product "
                         "(vjp_x) or an output epilogue (out_eps), not both")
    if out_eps is not None or res is not None or res_scale is not None or post is not None:
        res, post = epilogue_terms(a, res, res_scale, out_eps, post, res_sgn)
    if not _use_triton(a):
        return naive_head_apply(a, s, trans, a_eps, vjp_x, vjp_eps, res, res_scale, out_eps,
                                post, res_sgn, a_l1)
    if a_l1 is not None:
        (s, _), trans = l1_scaled_state(a, s, trans, a_l1), False
    out = torch.empty(a.shape, device=a.device, dtype=a.dtype)
    x, role = (vjp_x, "VJP") if vjp_x is not None else (post, None if post is None else "POST")
    head_apply_launch(a, s, trans, out, a_eps, vjp_eps, res, res_scale, out_eps, x, role,
                      res_sgn)
    return out


@on_input_device
def _rows_vjp_impl(a: torch.Tensor, s: torch.Tensor, trans: bool, a_eps: float | None,
                   res: torch.Tensor | None, res_scale: torch.Tensor | None, out_eps: float,
                   grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy, dd): the gradient of y = a S + res * res_scale (head_apply's, before its output
    normalisation) for the gradient `grad` of rows(y), and of res_scale, dd = sum over batch
    and tokens of dy * res in fp32 (fp64 for fp64 a; empty without res_scale). One
    head_apply_kernel launch (OUT_VJP) recomputes y, and each program adds its tile's dd
    terms into a row of its own, which torch sums (deterministic)."""
    res, _ = epilogue_terms(a, res, res_scale, out_eps, None)
    if not _use_triton(a):
        dy = naive_head_apply(a, s, trans, a_eps, None, 0.0, res, res_scale, out_eps,
                              out_grad=grad)
        dt = torch.float64 if a.dtype == torch.float64 else torch.float32
        return dy, (a.new_empty(0, dtype=dt) if res_scale is None else
                    (dy.to(dt) * res.to(dt)).sum((0, 1)))
    dy = torch.empty(a.shape, device=a.device, dtype=a.dtype)
    rows = head_apply_launch(a, s, trans, dy, a_eps, 0.0, res, res_scale, out_eps, grad,
                             "OUT_VJP")
    return dy, (a.new_empty(0, dtype=torch.float32) if rows is None else rows.sum(0))


def head_apply_launch(a, s, trans: bool, out, a_eps, vjp_eps: float, res, res_scale, out_eps,
                      x, x_role: str | None, res_sgn: bool = False) -> torch.Tensor | None:
    """Launch head_apply_kernel writing out ([B, N, C] contiguous), x read in its x_role (the
    kernel's flag: VJP, POST or OUT_VJP; None: not read); returns OUT_VJP's rows of
    res_scale's gradient ([B * token tiles, C] fp32) where a [C] res_scale is given, else
    None."""
    bsz, n, w = a.shape
    heads = s.shape[1]
    e = w // heads
    a, x, res = channel_rows(a), channel_rows(x), channel_rows(res)
    s = s.float().contiguous()
    if res_scale is not None:
        (res_scale,) = channel_vectors(res_scale)
    f32 = a.dtype != torch.bfloat16
    cfg = head_config(n, e, a.is_cuda, cuda_core_apply=f32)
    tiles = cdiv(n, cfg["BT"])
    rows = None
    if x_role == "OUT_VJP" and res_scale is not None:
        rows = torch.empty((bsz * tiles, w), device=a.device, dtype=torch.float32)
    xs = a if x is None else x  # never read where None
    rs = a if res is None else res
    start(head_apply_kernel, (bsz * heads * tiles,))(
        a, s, out, xs, rs, a if res_scale is None else res_scale, a if rows is None else rows,
        n, heads, a.stride(0), a.stride(1), xs.stride(0), xs.stride(1), rs.stride(0),
        rs.stride(1), 0 if res_scale is None or res_scale.dim() == 1 else w,
        vjp_eps if a_eps is None else a_eps, 0.0 if out_eps is None else out_eps,
        E=e, TRANS=trans, F32=f32, BT=cfg["BT"], BE=cfg["BE"], A_NORM=a_eps is not None,
        RES=res is not None, RES_SCALE=res_scale is not None, OUT_NORM=out_eps is not None,
        VJP=x_role == "VJP", POST=x_role == "POST", OUT_VJP=x_role == "OUT_VJP", RES_SGN=res_sgn,
        **index_widths(a, out, x, res, s), num_warps=cfg["num_warps"])
    return rows


def _state_setup(ctx, inputs, output) -> None:
    a, b, heads, a_eps, a_l1 = inputs
    state, norms = output
    ctx.save_for_backward(a, b, *((state, norms) if a_l1 is not None else ()))
    ctx.a_eps, ctx.a_l1 = a_eps, a_l1


def _state_backward(ctx, ds, _):
    """S = Â^T B, Â = rows(A) or A: dÂ = B dS^T (then through rows' vector-Jacobian product,
    in the same kernel), dB = Â dS. With a_l1, S = D P, P = A^T B, D = diag(1 / (n + eps)),
    n = sum_t |A[t]|: dP = D dS, dn = -sum_m dP ∘ S (on each row of S), and
    dA = B dP^T + sgn(A) dn in one launch (head_apply's res_sgn epilogue)."""
    if ds is None:  # only the norms were read: they are not differentiated
        return None, None, None, None, None
    a, b, *l1 = ctx.saved_tensors
    apply = (_head_apply_impl if getattr(ctx, "eager", False)
             else getattr(torch.ops, ATTENTION_OPS).head_apply)
    if ctx.a_l1 is not None:
        state, norms = l1
        ds, dn = l1_backward(ds, l1_denominators(norms, ctx.a_l1), state)  # dP, dn
        da = apply(b, ds, True, None, None, 0.0, a, dn, None, None, True)
    else:
        normed = ctx.a_eps is not None
        da = apply(b, ds, True, None, a if normed else None, ctx.a_eps if normed else 0.0)
    return da.to(a.dtype), apply(a, ds, False, ctx.a_eps).to(b.dtype), None, None, None


def _apply_setup(ctx, inputs, output) -> None:
    a, s, trans, a_eps, vjp_x, _, res, res_scale, out_eps, post, res_sgn, a_l1 = inputs
    if vjp_x is not None or res_sgn:
        raise NotImplementedError(
            "head_apply with vjp_x or res_sgn is a backward's own step: its double backward "
            "is not derived (a folded normalisation's second derivative)")
    ctx.save_for_backward(a, s, res, res_scale)
    ctx.trans, ctx.a_eps, ctx.out_eps, ctx.post = trans, a_eps, out_eps, post is not None
    ctx.a_l1 = a_l1


def _apply_backward(ctx, do, *_):
    """O = rows(Y) + P, Y = Â M + R D, M = S (S^T if trans), Â = rows(A) or A (Y alone
    where no out_eps; R D = R where no D): dY = rows' vector-Jacobian product at Y for dO
    and dD = sum_t dY R (one launch, recomputing Y), dÂ = dY M^T (then through rows'
    product, in the same kernel), dM = Â^T dY, dR = dY D, dP = dO. With a_l1, Â M = A M',
    M' = D M, D = diag(1 / (n + eps)), n = sum_t |A[t]| (recomputed, one pass over A):
    dM = D P and dn = -sum_m dM ∘ M' (on each row), P = A^T dY, and
    dA = dY M'^T + sgn(A) dn in one launch."""
    if do is None:  # O's gradient is undefined (set_materialize_grads(False)): none flows
        return (None,) * 12
    a, s, res, res_scale = ctx.saved_tensors
    heads = s.shape[1]
    eager = getattr(ctx, "eager", False)
    apply = _head_apply_impl if eager else getattr(torch.ops, ATTENTION_OPS).head_apply
    state = _head_state_impl if eager else getattr(torch.ops, ATTENTION_OPS).head_state
    m, trans = s, ctx.trans
    if ctx.a_l1 is not None:  # M' (trans taken)
        (m, den), trans = l1_scaled_state(a, s, trans, ctx.a_l1), False
    dy, dd = do, None
    if ctx.out_eps is not None:
        rows_vjp = (_rows_vjp_impl if eager
                    else getattr(torch.ops, ATTENTION_OPS).head_rows_vjp)
        dy, dd = rows_vjp(a, m, trans, ctx.a_eps, res, res_scale, ctx.out_eps, do)
    ds = state(a, dy, heads, ctx.a_eps)[0]  # Â^T dY
    if ctx.a_l1 is not None:
        ds, dn = l1_backward(ds, den, m)  # dM, dn
        da = apply(dy, m, True, None, None, 0.0, a, dn, None, None, True)
    else:
        normed = ctx.a_eps is not None
        da = apply(dy, m, not trans, None, a if normed else None, ctx.a_eps if normed else 0.0)
    da = da.to(a.dtype)
    if res_scale is not None and dd is None:  # no output normalisation: dY = dO
        dd = (dy.to(state_dtype(a)) * res).sum((0, 1))
    dres = None
    if res is not None and ctx.needs_input_grad[6]:  # [B, N, C], summed to res's shape by
        dres = (dy if res_scale is None else dy * res_scale).to(res.dtype)  # autograd
    return (da, (ds.transpose(-2, -1) if ctx.trans else ds).to(s.dtype), None, None, None,
            None, dres, None if res_scale is None else dd.to(res_scale.dtype), None,
            do if ctx.post else None, None, None)


def _register_head_ops():
    """torch.library custom ops (+ fake kernels + autograd), defined once per process and
    namespace (modules generated from the same source share them)."""
    try:
        ops = getattr(torch.ops, ATTENTION_OPS)
        return ops.head_state, ops.head_apply
    except AttributeError:
        pass
    state = torch.library.custom_op(f"{ATTENTION_OPS}::head_state", mutates_args=())(
        _head_state_impl)
    apply = torch.library.custom_op(f"{ATTENTION_OPS}::head_apply", mutates_args=())(
        _head_apply_impl)
    # the output normalisation's backward step (no autograd of its own: not differentiated)
    rows_vjp = torch.library.custom_op(f"{ATTENTION_OPS}::head_rows_vjp", mutates_args=())(
        _rows_vjp_impl)

    @state.register_fake
    def _(a, b, heads, a_eps=None, a_l1=None):
        bsz, _, w = a.shape
        e = w // heads
        dt = state_dtype(a)
        return (a.new_empty((bsz, heads, e, e), dtype=dt),
                a.new_empty((0,) if a_l1 is None else (bsz, heads, e), dtype=dt))

    @apply.register_fake
    def _(a, s, trans, a_eps=None, vjp_x=None, vjp_eps=0.0, res=None, res_scale=None,
          out_eps=None, post=None, res_sgn=False, a_l1=None):
        return a.new_empty(a.shape)

    @rows_vjp.register_fake
    def _(a, s, trans, a_eps, res, res_scale, out_eps, grad):
        dt = torch.float64 if a.dtype == torch.float64 else torch.float32
        return a.new_empty(a.shape), a.new_empty(0 if res_scale is None else a.shape[-1],
                                                 dtype=dt)

    state.register_autograd(_state_backward, setup_context=_state_setup)
    apply.register_autograd(_apply_backward, setup_context=_apply_setup)
    ops = getattr(torch.ops, ATTENTION_OPS)
    return ops.head_state, ops.head_apply


_state_op, _apply_op = _register_head_ops()
# head_state(...) gives (S,): the norms, its second output, are saved for the backward and not
# differentiated
head_state = custom_op_caller(_state_op, _head_state_impl, _state_setup, _state_backward,
                              outputs=1)
head_apply = custom_op_caller(_apply_op, _head_apply_impl, _apply_setup, _apply_backward)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                     weight: torch.Tensor | None = None, q_l1: float | None = None,
                     k_l1: float | None = None, q_l2: float | None = None,
                     k_l2: float | None = None, res: torch.Tensor | None = None,
                     res_scale: torch.Tensor | None = None, out_l2: float | None = None,
                     post: torch.Tensor | None = None) -> torch.Tensor:
    """Per head g: q_g (W_g ⊙ k_g^T v_g), W [h*e*e] slot-wise weights (None: 1); [B, N, h*e]
    each -> [B, N, h*e]. Two kernels: the [e, e] state (a token sum), then its product with q;
    the weighting, on the [B, h, e, e] state, in torch.

    q_l1 / k_l1 (eps, or None): q / k l1-normalised over tokens first, x[t, c] / (n[c] + eps)
    with n[c] = sum_t |x[t, c]|. Each such map is diag(1 / (n + eps)) on the right of q or k,
    so it scales row c of the state: (q D_q) ((k D_k)^T v) = q (D_q D_k (k^T v)). Folded there,
    no normalised copy is made: k's norms come from head_state's kernel, from the tiles its
    product loads; q's cost one reduction over q (head_apply's a_l1), and one more in the
    backward, which recomputes them. The backward adds the norms' terms sgn(x) dn in the
    launches that write dq and dk (head_apply's res_sgn).

    q_l2 / k_l2 (eps, or None): q / k l2-normalised per token and head first, x[t, g] /
    (|x[t, g]|_2 + eps) (Castling-ViT's): the kernels, which load each row's head slice whole,
    normalise it there (k in the state's product; q as a row scale of q S), and their
    backward launches apply the normalisation's vector-Jacobian product to the gradients
    they write. No normalised copy is made.

    res, res_scale (per channel; each optional): q S + res * res_scale, the sum made in
    head_apply's epilogue. out_l2 (eps), with post optional: the output
    rows(q S + res * res_scale) + post, rows the l2 normalisation per row and head
    (Castling-ViT's output, l2rows(attention + v * d) + dwconv(v)), made in head_apply's
    epilogue, the sum never stored; its backward is one more launch of the same kernel
    (head_rows_vjp: the normalisation's vector-Jacobian product, recomputing q S). A zero row
    of the sum at eps = 0 gives post there, and no gradient, where the unfolded division
    gives NaN."""
    if q.shape[-1] % heads:  # the kernels would read past a head's channels
        raise ValueError(f"linear_attention: width {q.shape[-1]} does not split into "
                         f"heads={heads}")
    (state,) = head_state(k, v, heads, k_l2, k_l1)
    if weight is not None:  # W ⊙ (D_k S) = D_k (W ⊙ S): the weighting commutes with D_k
        state = state * weight.view(1, heads, *state.shape[-2:])
    return head_apply(q, state, False, q_l2, None, 0.0, res, res_scale, out_l2, post, False,
                      q_l1)
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


@dataclass(frozen=True)
class OutputFold:
    """A linear attention whose output is `end` = rows(attention + res [* scale]) [+ post],
    rows an l2 normalisation per row and head (the attention's heads): computed by the
    attention's head_apply epilogue (linear_attention's res, res_scale, out_l2, post)."""
    norm: int  # the normalisation of the sum
    end: int  # the node whose value the call gives: the post sum, else the normalisation
    res: int  # the other term of the sum (the input of `scaled` where that is folded)
    scaled: int | None  # a per-channel scale (diagonal) read by the sum alone: res_scale
    post: int | None  # the term added after the normalisation
    absorbed: frozenset[int]  # the nodes the call computes without storing them (not end)


def folded_outputs(g: Graph) -> dict[int, OutputFold]:
    """{linear_attention node: its OutputFold} where the attention's only reader is a sum of
    two terms whose only reader is an l2 row normalisation over the attention's heads (the
    sum and the normalisation are then never stored); `post` where the normalisation's only
    reader is a sum of two terms. A normalisation that another attention folds as its q or k
    (folded_normalizers: its value is never made) is not folded here, nor a fold that shares
    a node with an earlier one (two attentions summed under one normalisation, one fold's
    output in another's sum): each value a fold needs is made, once."""
    claimed = folded_normalizers(g)
    folds = {}
    for nid, node, _ in g.items():
        if node.op != "linear_attention" or len(g.users(nid)) != 1:
            continue
        total = g.users(nid)[0]
        terms = g.inputs(total)
        readers = g.users(total)
        if (g.node(total).op != "add" or len(terms) != 2 or terms.count(nid) != 1
                or len(readers) != 1):
            continue
        norm = readers[0]
        if g.node(norm).op != "normalize" or g.node(norm).a["kind"] != "l2_rows" \
                or g.node(norm).a["heads"] != node.a["heads"] or norm in claimed:
            continue
        res = terms[1 - terms.index(nid)]
        scaled = res if g.node(res).op == "diagonal" and g.users(res) == [total] else None
        if scaled is not None:
            res = g.inputs(scaled)[0]
        post, end = None, norm
        after = g.users(norm)
        if len(after) == 1 and g.node(after[0]).op == "add" \
                and len(g.inputs(after[0])) == 2 and g.inputs(after[0]).count(norm) == 1:
            end = after[0]
            post = next(t for t in g.inputs(end) if t != norm)
        absorbed = {nid, total, norm} - {end} | ({scaled} if scaled is not None else set())
        fold = OutputFold(norm, end, res, scaled, post, frozenset(absorbed))
        if not any(_overlap(fold, other) or _overlap(other, fold) for other in folds.values()):
            folds[nid] = fold
    return folds


def _overlap(fold: OutputFold, other: OutputFold) -> bool:
    """Whether `other` computes a node `fold` computes too, or leaves unmade one it reads."""
    return bool((fold.absorbed | {fold.end}) & (other.absorbed | {other.end})
                or {fold.res, fold.post} & other.absorbed)


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
             "head_apply_kernel": [(1, "BT", "BE", "BE")] * 3}  # fp32, split_dot's two
