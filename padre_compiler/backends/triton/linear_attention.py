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
there (`linear_attention`'s q_l1 / k_l1; `folded_normalizers` picks the nodes).
'''

from __future__ import annotations

from padre_compiler.ir.graph import Graph

KERNEL = '''
if triton is not None:

    @triton.jit(do_not_specialize=["N"])
    def head_state_kernel(
        a, b, p, N, H, s_ab, s_an, s_bb, s_bn,
        E: tl.constexpr, IEEE: tl.constexpr, CHUNK: tl.constexpr, BT: tl.constexpr,
        BE: tl.constexpr,
        I64: tl.constexpr = False,
    ):
        """Partial state of token chunk i: p[b, g, i] = sum_{t in chunk i} a[b, t, g]^T b[b, t, g]

        a, b: [B, N, H*E] (any batch/token strides, channel stride 1); p: [B, H, n_chunks, E, E]
        fp32 contiguous. [BE, BT] @ [BT, BE] products, fp32 accumulation.
        """
        i_k, i_bh = tl.program_id(0), tl.program_id(1)
        if I64:  # an offset reaches 2**31 (needs_i64): batch and head offsets in int64
            i_bh = i_bh.to(tl.int64)
        i_b, i_h = i_bh // H, i_bh % H
        o_e = tl.arange(0, BE)
        m_e = o_e < E
        b_s = tl.zeros([BE, BE], dtype=tl.float32)  # [BE, BE] state of this chunk
        for t0 in range(0, CHUNK, BT):
            o_t = i_k * CHUNK + t0 + tl.arange(0, BT)
            m = (o_t < N)[:, None] & m_e[None, :]
            c_h = i_h * E + o_e[None, :]
            b_a = tl.load(a + i_b * s_ab + o_t[:, None] * s_an + c_h, mask=m, other=0.)  # [BT, BE]
            b_b = tl.load(b + i_b * s_bb + o_t[:, None] * s_bn + c_h, mask=m, other=0.)  # [BT, BE]
            if IEEE:
                b_s = tl.dot(tl.trans(b_a), b_b, b_s, input_precision="ieee")
            else:
                b_s = tl.dot(tl.trans(b_a), b_b, b_s)
        n_k = tl.num_programs(0)
        p_s = p + (i_bh * n_k + i_k) * E * E + o_e[:, None] * E + o_e[None, :]
        tl.store(p_s, b_s, mask=m_e[:, None] & m_e[None, :])


    @triton.jit(do_not_specialize=["N"])
    def head_apply_kernel(
        a, s, o, N, H, s_ab, s_an,
        E: tl.constexpr, TRANS: tl.constexpr, F32: tl.constexpr, BT: tl.constexpr,
        BE: tl.constexpr,
        I64: tl.constexpr = False,
    ):
        """o[b, t, g] = a[b, t, g] @ S[b, g] (S^T if TRANS) for one [BT] token tile.

        a: [B, N, H*E] (channel stride 1); s: [B, H, E, E] fp32 contiguous; o: [B, N, H*E]
        contiguous. [BT, BE] @ [BE, BE], fp32 accumulation; F32: fp32 operands (fp32 inputs,
        and fp16 ones, whose range cannot hold a state summed over N tokens), else bf16.
        """
        i_t, i_bh = tl.program_id(0), tl.program_id(1)
        if I64:  # an offset reaches 2**31 (needs_i64): batch and head offsets in int64
            i_bh = i_bh.to(tl.int64)
        i_b, i_h = i_bh // H, i_bh % H
        o_t = i_t * BT + tl.arange(0, BT)
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


def naive_head_state(a, b, heads: int):
    """Naive twin of head_state_kernel: [B, N, h*e] x2 -> [B, h, e, e] (fp32 or fp64)."""
    bsz, n, w = a.shape
    dt = torch.float64 if a.dtype == torch.float64 else torch.float32
    ah, bh = (t.to(dt).reshape(bsz, n, heads, w // heads) for t in (a, b))
    return torch.einsum("bthc,bthm->bhcm", ah, bh).contiguous()


def naive_head_apply(a, s, trans: bool):
    """Naive twin of head_apply_kernel: [B, N, h*e], [B, h, e, e] -> [B, N, h*e]."""
    bsz, n, w = a.shape
    heads = s.shape[1]
    dt = torch.float64 if a.dtype == torch.float64 else torch.float32
    st = s.to(dt).transpose(-2, -1) if trans else s.to(dt)
    out = torch.einsum("bthc,bhcm->bthm", a.to(dt).reshape(bsz, n, heads, w // heads), st)
    return out.reshape(bsz, n, w).to(a.dtype)


def _head_state_impl(a: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    if not _use_triton(a):
        return naive_head_state(a, b, heads)
    bsz, n, w = a.shape
    e = w // heads
    a, b = (t if t.stride(-1) == 1 else t.contiguous() for t in (a, b))
    check_image_offsets(a, b)
    cfg = head_config(n, e, a.is_cuda)
    chunks = cdiv(n, cfg["CHUNK"])
    parts = torch.empty((bsz, heads, chunks, e, e), device=a.device, dtype=torch.float32)
    head_state_kernel[(chunks, bsz * heads)](
        a, b, parts, n, heads, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        E=e, IEEE=a.dtype == torch.float32, CHUNK=cfg["CHUNK"], BT=cfg["BT"], BE=cfg["BE"],
        I64=needs_i64(a, b, parts), num_warps=cfg["num_warps"])
    return parts.sum(2)


def _head_apply_impl(a: torch.Tensor, s: torch.Tensor, trans: bool) -> torch.Tensor:
    if not _use_triton(a):
        return naive_head_apply(a, s, trans)
    bsz, n, w = a.shape
    heads = s.shape[1]
    e = w // heads
    a = a if a.stride(-1) == 1 else a.contiguous()
    check_image_offsets(a)
    s = s.float().contiguous()
    out = torch.empty((bsz, n, w), device=a.device, dtype=a.dtype)
    cfg = head_config(n, e, a.is_cuda)
    head_apply_kernel[(cdiv(n, cfg["BT"]), bsz * heads)](
        a, s, out, n, heads, a.stride(0), a.stride(1),
        E=e, TRANS=trans, F32=a.dtype != torch.bfloat16, BT=cfg["BT"], BE=cfg["BE"],
        I64=needs_i64(a, s, out), num_warps=cfg["num_warps"])
    return out


def _state_setup(ctx, inputs, output) -> None:
    a, b, heads = inputs
    ctx.save_for_backward(a, b)


def _state_backward(ctx, ds):  # S = A^T B: dA = B dS^T, dB = A dS
    a, b = ctx.saved_tensors
    apply = (_head_apply_impl if getattr(ctx, "eager", False)
             else torch.ops.padre_triton.head_apply_v1)
    return apply(b, ds, True).to(a.dtype), apply(a, ds, False).to(b.dtype), None


def _apply_setup(ctx, inputs, output) -> None:
    a, s, trans = inputs
    ctx.save_for_backward(a, s)
    ctx.trans = trans


def _apply_backward(ctx, do):  # Y = A S: dA = dY S^T, dS = A^T dY (its transpose if S^T)
    a, s = ctx.saved_tensors
    heads = s.shape[1]
    eager = getattr(ctx, "eager", False)
    apply = _head_apply_impl if eager else torch.ops.padre_triton.head_apply_v1
    state = _head_state_impl if eager else torch.ops.padre_triton.head_state_v1
    da = apply(do, s, not ctx.trans).to(a.dtype)
    ds = state(a, do, heads)
    return da, (ds.transpose(-2, -1) if ctx.trans else ds).to(s.dtype), None


def _register_head_ops():
    """torch.library custom ops (+ fake kernels + autograd), defined once per process."""
    try:
        return torch.ops.padre_triton.head_state_v1, torch.ops.padre_triton.head_apply_v1
    except AttributeError:
        pass
    state = torch.library.custom_op("padre_triton::head_state_v1", mutates_args=())(
        _head_state_impl)
    apply = torch.library.custom_op("padre_triton::head_apply_v1", mutates_args=())(
        _head_apply_impl)

    @state.register_fake
    def _(a, b, heads):
        bsz, _, w = a.shape
        e = w // heads
        dt = torch.float64 if a.dtype == torch.float64 else torch.float32
        return a.new_empty((bsz, heads, e, e), dtype=dt)

    @apply.register_fake
    def _(a, s, trans):
        return a.new_empty(a.shape)

    state.register_autograd(_state_backward, setup_context=_state_setup)
    apply.register_autograd(_apply_backward, setup_context=_apply_setup)
    return torch.ops.padre_triton.head_state_v1, torch.ops.padre_triton.head_apply_v1


head_state, head_apply = (
    custom_op_caller(op, impl, setup, backward) for op, impl, setup, backward in zip(
        _register_head_ops(), (_head_state_impl, _head_apply_impl),
        (_state_setup, _apply_setup), (_state_backward, _apply_backward), strict=True))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                     weight: torch.Tensor | None = None, q_l1: float | None = None,
                     k_l1: float | None = None) -> torch.Tensor:
    """Per head g: q_g (W_g ⊙ k_g^T v_g), W [h*e*e] slot-wise weights (None: 1); [B, N, h*e]
    each -> [B, N, h*e]. Two kernels: the [e, e] state (a token sum), then its product with q;
    the weighting, on the [B, h, e, e] state, in torch.

    q_l1 / k_l1 (eps, or None): q / k l1-normalised over tokens first, x[t, c] / (n[c] + eps)
    with n[c] = sum_t |x[t, c]|. Each such map is diag(1 / (n + eps)) on the right of q or k,
    so it scales row c of the state: (q D_q) ((k D_k)^T v) = q (D_q D_k (k^T v)). Folded there,
    a normalisation costs one reduction over q or k instead of three passes (abs, sum, div)
    and a normalised copy."""
    state = head_state(k, v, heads)
    bsz, _, w = q.shape
    e = w // heads
    if weight is not None:
        state = state * weight.view(1, heads, e, e)
    for x, eps in ((q, q_l1), (k, k_l1)):
        if eps is not None:  # [B, h*e] norms -> [B, h, e, 1] row scales
            state = state / (L1Tokens.apply(x, state.dtype) + eps).view(bsz, heads, e, 1)
    return head_apply(q, state, False)


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

FOLDABLE = ("l1_tokens",)  # normalisations linear_attention applies to its state (q_l1, k_l1)


def folded_normalizers(g: Graph) -> dict[int, str]:
    """{normalize node: "q_l1" or "k_l1"} for each l1-over-tokens normalisation whose only
    reader is a linear attention, as its q or as its k: the attention applies it to its state
    (that keyword of linear_attention), and the normalised tensor is never made."""
    folded = {}
    for nid, node, inputs in g.items():
        if node.op != "linear_attention":
            continue
        for src, slot in zip(inputs[:2], ("q_l1", "k_l1"), strict=True):
            norm = g.node(src)
            if (norm.op == "normalize" and norm.a["kind"] in FOLDABLE
                    and g.users(src) == [nid] and inputs.count(src) == 1):
                folded[src] = slot
    return folded


# tl.dot tiles per kernel, (batch, M, N, K), for the static GPU-legality check (one entry per
# call site; the generated module carries them as DOT_TILES)
DOT_TILES = {"head_state_kernel": [(1, "BE", "BE", "BT"), (1, "BE", "BE", "BT")],
             "head_apply_kernel": [(1, "BT", "BE", "BE"), (1, "BT", "BE", "BE")]}
