'''Source text of the long-convolution kernels, pasted into generated modules that compute a
long-convolution region (`find_long_conv_regions`): the causal long convolution (Hyena's,
Mamba-LTI's) with the Hadamard product that makes its input and the one that gates its output,

    x = a ⊙ b          y = T_h x + d ⊙ x          o = y ⊙ g          ([B, N, C] each)

T_h the causal Toeplitz map (T_h x)[t, c] = sum_{s<=t} h[c, t - s] x[s, c], d the skip; b, d
and g optional. T_h x runs as FFTs of size 2N in torch (cuFFT on a GPU): with x and h
zero-padded to 2N the circular convolution's first N outputs are the causal one's (no
wrap-around reaches them). Two Triton kernels do the rest, one pass each:

    long_conv_in:   xp[b, c] = x[b, :, c] ++ 0_N     the FFTs' operand: channel-major (each
                                                    channel's 2N samples contiguous), padded,
                                                    fp32
    long_conv_out:  o = (yp[:, :N] + d ⊙ xp[:, :N]) ⊙ g   back to token-major, in o's dtype

so the products, the casts, the padding, the layout change, the slice and the skip term move
no bytes of their own; torch adds the FFTs and the spectral product.

Backward (derived: the adjoint of T_h is the anti-causal correlation
(T_h^T dy)[s] = sum_{t>=s} h[t - s] dy[t]; Hadamard products by the product rule):

    dy = do ⊙ g,  dg = do ⊙ y              long_conv_in (dy padded; dg token-major, y kept)
    dx = T_h^T dy + d ⊙ dy                  irfft(rfft(dy) conj(H)), then long_conv_out:
    da = dx ⊙ b,  db = dx ⊙ a               the same launch
    dh[c, k] = sum_{b,t} dy[t, c] x[t - k, c]    irfft(sum_b rfft(dy) conj(X))[:N], X kept,
                                                 the batch sum spectral_correlation's kernel
    dd[c] = sum_{b,t} dy[t, c] x[t, c] = dh[c, 0]

Zero-padded to 2N, each circular correlation is the linear one at lags 0..N-1 as well.
`derivation_checks` proves these index identities in sympy at small N, for any FFT length
from 2N - 1. The length is 2N: a 7-smooth length would spare cuFFT Bluestein's algorithm
where 2N has a large prime factor, but the kept spectrum's size would then be no expression
of a traced N (torch.compile with dynamic shapes).
'''

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import sympy as sp

from padre_compiler.ir.graph import Graph

# the generated module's constant naming this family's torch.ops namespace
OPS_NAME = "LONG_CONV_OPS"

KERNEL = '''
if triton is not None:

    @triton.jit
    def token_tile(rows, N, C, BT: tl.constexpr, BC: tl.constexpr, I64: tl.constexpr,
                   FOLD: tl.constexpr):
        """This program's (batch b, token offsets [BT], channel offsets [BC], mask [BT, BC] of
        t < N and c < C) on a grid (B * cdiv(rows, BT), cdiv(C, BC)): the batch shares axis 0
        with the token tiles (2**31 - 1 programs there, not 65,535), the channel blocks are
        axis 1 (grid_axis1: FOLD where start folded it); in int64 with I64."""
        i_b, i_t = outer_tile(tl.cdiv(rows, BT), I64)
        o_t = i_t * BT + tl.arange(0, BT)
        o_c = grid_axis1(FOLD) * BC + tl.arange(0, BC)
        if I64:
            o_t, o_c = o_t.to(tl.int64), o_c.to(tl.int64)
        return i_b, o_t, o_c, (o_t < N)[:, None] & (o_c < C)[None, :]


    @triton.jit(do_not_specialize=["N", "C"])
    def long_conv_in_kernel(
        a, b, e, xp, eo, N, C, s_ab, s_an, s_bb, s_bn, s_eb, s_en, s_ob, s_on,
        B_IN: tl.constexpr, E_IN: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
        I64: tl.constexpr = False, FOLD: tl.constexpr = False,
    ):
        """xp[b, c, t] = a[b, t, c] * b[b, t, c] (a alone without B_IN) for t < N, 0 for
        N <= t < 2N; with E_IN also eo[b, t, c] = a[b, t, c] * e[b, t, c].

        a, b, e, eo: [B, N, C] (any batch/token strides, channel stride 1; eo's s_ob, s_on);
        xp: [B, C, 2N] fp32 contiguous. Products in fp32. One [BT, BC] tile of
        (token, channel) per program, grid (B * cdiv(2N, BT), cdiv(C, BC)) (token_tile): the
        tiles past N load nothing and store the zero padding. I64: every offset in int64.
        """
        i_b, o_t, o_c, m = token_tile(2 * N, N, C, BT, BC, I64, FOLD)
        b_x = tl.load(a + i_b * s_ab + o_t[:, None] * s_an + o_c[None, :], mask=m,
                      other=0.).to(tl.float32)  # [BT, BC]
        if E_IN:
            b_e = tl.load(e + i_b * s_eb + o_t[:, None] * s_en + o_c[None, :], mask=m, other=0.)
            tl.store(eo + i_b * s_ob + o_t[:, None] * s_on + o_c[None, :],
                     (b_x * b_e.to(tl.float32)).to(eo.dtype.element_ty), mask=m)
        if B_IN:
            b_x *= tl.load(b + i_b * s_bb + o_t[:, None] * s_bn + o_c[None, :], mask=m,
                           other=0.).to(tl.float32)
        tl.store(xp + (i_b * C + o_c[None, :]) * (2 * N) + o_t[:, None], b_x,
                 mask=(o_t < 2 * N)[:, None] & (o_c < C)[None, :])


    @triton.jit(do_not_specialize=["N", "C"])
    def long_conv_out_kernel(
        yp, xp, d, g1, g2, o1, o2, so, N, C, s_1b, s_1n, s_2b, s_2n, s_ob, s_on,
        SKIP: tl.constexpr, G1: tl.constexpr, G2: tl.constexpr, STORE_S: tl.constexpr,
        BT: tl.constexpr, BC: tl.constexpr, I64: tl.constexpr = False,
        FOLD: tl.constexpr = False,
    ):
        """s[b, t, c] = yp[b, c, t] (+ d[c] * xp[b, c, t] with SKIP) for t < N;
        o1 = s * g1 (s without G1), o2 = s * g2 (G2), so = s (STORE_S).

        yp, xp: [B, C, 2N] fp32 contiguous (t < N read); d: [C]; g1, g2, o1, o2, so:
        [B, N, C] (any batch/token strides, channel stride 1; o1, o2 and so all at s_ob,
        s_on), each stored in its own dtype. fp32 math. One [BT, BC] tile per program, grid
        (B * cdiv(N, BT), cdiv(C, BC)) (token_tile).
        """
        i_b, o_t, o_c, m = token_tile(N, N, C, BT, BC, I64, FOLD)
        spectral = (i_b * C + o_c[None, :]) * (2 * N) + o_t[:, None]
        b_s = tl.load(yp + spectral, mask=m, other=0.)  # [BT, BC]
        if SKIP:
            b_d = tl.load(d + o_c, mask=o_c < C, other=0.).to(tl.float32)
            b_s += b_d[None, :] * tl.load(xp + spectral, mask=m, other=0.)
        out = i_b * s_ob + o_t[:, None] * s_on + o_c[None, :]
        if STORE_S:
            tl.store(so + out, b_s.to(so.dtype.element_ty), mask=m)
        b_o = b_s
        if G1:
            b_o = b_s * tl.load(g1 + i_b * s_1b + o_t[:, None] * s_1n + o_c[None, :], mask=m,
                                other=0.).to(tl.float32)
        tl.store(o1 + out, b_o.to(o1.dtype.element_ty), mask=m)
        if G2:
            b_o = b_s * tl.load(g2 + i_b * s_2b + o_t[:, None] * s_2n + o_c[None, :], mask=m,
                                other=0.).to(tl.float32)
            tl.store(o2 + out, b_o.to(o2.dtype.element_ty), mask=m)


    @triton.jit(do_not_specialize=["M", "B"])
    def spectral_correlation_kernel(u, v, p, M, B, BM: tl.constexpr, I64: tl.constexpr = False):
        """p[m] = sum_b u[b, m] conj(v[b, m]) for complex u, v: [B, M] contiguous, p: [M],
        each as interleaved (re, im) fp32 pairs. (ur + i ui)(vr - i vi) =
        ur vr + ui vi + i (ui vr - ur vi); fp32 sums in batch order (deterministic). One [BM]
        tile per program, grid (cdiv(M, BM),); I64: offsets in a row in int64.
        """
        o_m = tl.program_id(0) * BM + tl.arange(0, BM)
        if I64:
            o_m, M = o_m.to(tl.int64), M.to(tl.int64)
        m = o_m < M
        b_re = tl.zeros([BM], dtype=tl.float32)
        b_im = tl.zeros([BM], dtype=tl.float32)
        p_u, p_v = u + 2 * o_m, v + 2 * o_m
        for _ in range(B):  # row b at 2 * M * b: the pointers advance in 64 bits
            b_ur, b_ui = tl.load(p_u, mask=m, other=0.), tl.load(p_u + 1, mask=m, other=0.)
            b_vr, b_vi = tl.load(p_v, mask=m, other=0.), tl.load(p_v + 1, mask=m, other=0.)
            b_re += b_ur * b_vr + b_ui * b_vi
            b_im += b_ui * b_vr - b_ur * b_vi
            p_u += 2 * M
            p_v += 2 * M
        tl.store(p + 2 * o_m, b_re, mask=m)
        tl.store(p + 2 * o_m + 1, b_im, mask=m)
'''

RUNTIME = '''
# one [BT, BC] tile for both kernels, CPU and GPU: 32 channels of a token-major row are two
# whole 32-byte sectors in 16 bits, 32 tokens of a channel-major row one 128-byte line in fp32;
# at 8 values a thread both kernels take at most 48 registers for sm_90, so an SM holds 40 or more
# of their warps to hide memory latency (benchmarks/results/launch_census*.md,
# tests/triton/test_triton_aot.py)
LONG_CONV_TILE = {"BT": 32, "BC": 32, "num_warps": 4}


def result_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype torch's type promotion gives a product of these tensors (None: absent)."""
    present = {t.dtype for t in tensors if t is not None}
    if len(present) == 1:  # the usual case, without a dispatched call
        return present.pop()
    return functools.reduce(torch.promote_types, present)


def spectral_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The FFTs' real dtype: float32, float64 where an operand is float64 (half-precision
    FFTs are limited to power-of-two sizes on a GPU and absent on a CPU)."""
    return torch.float64 if result_dtype(*tensors) == torch.float64 else torch.float32


def naive_long_conv_in(a, b, e, e_dtype=None):
    """Naive twin of long_conv_in_kernel: (xp, eo), xp = (a ⊙ b) as [B, C, 2N] zero-padded
    past N, eo = a ⊙ e in e_dtype (a's by default; None without e)."""
    dt = spectral_dtype(a, b, e)
    x = a.to(dt) if b is None else a.to(dt) * b.to(dt)
    xp = F.pad(x.transpose(1, 2), (0, a.shape[1])).contiguous()
    return xp, None if e is None else (a.to(dt) * e.to(dt)).to(e_dtype or a.dtype).contiguous()


def naive_long_conv_out(yp, xp, d, g1, g2, n: int, store_s: bool, dtype: torch.dtype,
                        dtype2: torch.dtype | None = None):
    """Naive twin of long_conv_out_kernel: (o1, o2, s), s = yp + d ⊙ xp at t < N token-major,
    o1 = s ⊙ g1 (s without g1), o2 = s ⊙ g2; o1 and s in dtype, o2 in dtype2 (dtype by
    default); o2 and s None where not asked for."""
    s = yp[..., :n].transpose(1, 2)
    if d is not None:
        s = s + d.to(s.dtype) * xp[..., :n].transpose(1, 2)
    o1 = s if g1 is None else s * g1.to(s.dtype)
    o2 = None if g2 is None else (s * g2.to(s.dtype)).to(dtype2 or dtype).contiguous()
    return o1.to(dtype).contiguous(), o2, s.to(dtype).contiguous() if store_s else None


def long_conv_in(a, b, e, e_dtype=None, eo=None):
    """(xp, eo) of long_conv_in_kernel, or of its naive twin where Triton cannot run; eo
    written into the given [B, N, C] view (channel stride 1) where one is given."""
    if not all(_use_triton(t) for t in (a, b, e) if t is not None):
        xp, made = naive_long_conv_in(a, b, e, e_dtype)
        return xp, made if eo is None or made is None else eo.copy_(made)
    bsz, n, c = a.shape
    n2 = 2 * n
    a, b, e = channel_rows(a), channel_rows(b), channel_rows(e)
    xp = torch.empty((bsz, c, n2), device=a.device, dtype=torch.float32)
    if eo is None and e is not None:
        eo = torch.empty((bsz, n, c), device=a.device, dtype=e_dtype or a.dtype)
    bt, bc = LONG_CONV_TILE["BT"], LONG_CONV_TILE["BC"]
    bb, ee = (a if b is None else b), (a if e is None else e)  # never read where None
    oo = a if eo is None else eo
    start(long_conv_in_kernel, (bsz * cdiv(n2, bt), cdiv(c, bc)))(
        a, bb, ee, xp, oo, n, c, a.stride(0), a.stride(1), bb.stride(0), bb.stride(1),
        ee.stride(0), ee.stride(1), oo.stride(0), oo.stride(1), B_IN=b is not None,
        E_IN=e is not None, BT=bt, BC=bc, I64=any(index_widths(a, bb, ee, xp, oo).values()),
        num_warps=LONG_CONV_TILE["num_warps"])
    return xp, eo


def long_conv_out(yp, xp, d, g1, g2, n: int, store_s: bool, dtype: torch.dtype,
                  dtype2: torch.dtype | None = None, outs=None):
    """(o1, o2, s) of long_conv_out_kernel, or of its naive twin where Triton cannot run;
    outs: (o1, o2) written into the given [B, N, C] views (o2's None without g2), views of one
    tensor at its strides, and no s (the backward's gradients as parts of one tensor)."""
    if not _use_triton(yp):
        made = naive_long_conv_out(yp, xp, d, g1, g2, n, store_s, dtype, dtype2)
        if outs is None:
            return made
        return (*(o if m is None else o.copy_(m) for o, m in zip(outs, made[:2], strict=True)),
                None)
    bsz, c, _ = yp.shape
    g1, g2 = channel_rows(g1), channel_rows(g2)
    (d,) = channel_vectors(d)
    if outs is None:
        o1, o2, so = (torch.empty((bsz, n, c), device=yp.device, dtype=dt) if on else None
                      for on, dt in ((True, dtype), (g2 is not None, dtype2 or dtype),
                                     (store_s, dtype)))
    else:
        (o1, o2), so = outs, None
    bt, bc = LONG_CONV_TILE["BT"], LONG_CONV_TILE["BC"]
    h1, h2 = (o1 if g1 is None else g1), (o1 if g2 is None else g2)  # never read where None
    start(long_conv_out_kernel, (bsz * cdiv(n, bt), cdiv(c, bc)))(
        yp, xp, yp if d is None else d, h1, h2, o1, o1 if o2 is None else o2,
        o1 if so is None else so, n, c, h1.stride(0), h1.stride(1), h2.stride(0), h2.stride(1),
        o1.stride(0), o1.stride(1), SKIP=d is not None, G1=g1 is not None, G2=g2 is not None,
        STORE_S=store_s, BT=bt, BC=bc, I64=any(index_widths(yp, h1, h2, o1, o2).values()),
        num_warps=LONG_CONV_TILE["num_warps"])
    return o1, o2, so


# complex entries a program of spectral_correlation_kernel sums over the batch: 512 on 4 warps,
# 4 a thread a batch row; C (N + 1) / 512 programs (the 2N-point FFT's N + 1 frequencies)
SPECTRAL_TILE = {"BM": 512, "num_warps": 4}


def naive_spectral_correlation(u, v):
    """Naive twin of spectral_correlation_kernel: sum_b u[b] conj(v[b])."""
    return (u * v.conj_physical()).sum(0)


def spectral_correlation(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_b u[b] conj(v[b]) of complex [B, C, F] tensors: [C, F], one read of each (no
    conjugated copy, no product tensor); the naive twin where Triton cannot run."""
    ur, vr = torch.view_as_real(u.contiguous()), torch.view_as_real(v.contiguous())
    if not _use_triton(ur):
        return naive_spectral_correlation(u, v)
    bsz, c, f = u.shape
    p = torch.empty((c, f), device=u.device, dtype=u.dtype)
    bm = SPECTRAL_TILE["BM"]
    start(spectral_correlation_kernel, (cdiv(c * f, bm),))(
        ur, vr, torch.view_as_real(p), c * f, bsz, BM=bm, I64=2 * c * f >= 2**31,
        num_warps=SPECTRAL_TILE["num_warps"])
    return p


def filter_spectrum(filt: torch.Tensor, n: int, dt: torch.dtype) -> torch.Tensor:
    """rfft of the filter's first N taps zero-padded to 2N: [C, N + 1] (taps past its length
    L count as 0 where N > L)."""
    return torch.fft.rfft(filt[:, :n].to(dt), n=2 * n)


def long_conv_outputs(a: torch.Tensor, b: torch.Tensor | None, gate: torch.Tensor | None,
                      keep: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward op's (o, y, X) as the fake kernel gives them, unwritten: o [B, N, C] in the
    operands' promoted dtype (as torch's o = (T_h (a * b)) * g); y (kept for the gate's
    gradient) likewise where keep and a gate, else empty; X = rfft(xp) [B, C, N + 1] complex
    (kept for the filter's gradient) where keep, else empty."""
    bsz, n, c = a.shape
    dt = result_dtype(a, b, gate)
    return (a.new_empty(a.shape, dtype=dt),
            a.new_empty(a.shape if keep and gate is not None else 0, dtype=dt),
            a.new_empty((bsz, c, n + 1) if keep else 0, dtype=complex_dtype(a, b)))


def complex_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.complex128 if spectral_dtype(*tensors) == torch.float64 else torch.complex64


def part_views(a: torch.Tensor, b: torch.Tensor | None, gate: torch.Tensor | None, c: int,
               parts: list[int] | None) -> tuple[torch.Tensor | None, ...]:
    """(a, b, gate) as the op reads them. With parts, a holds them side by side as the blocks
    of C channels of one [B, N, k C] tensor (the parts of one split), parts[i] the block of
    a, b and the gate (-1: absent), every block one of them; b and gate are then None."""
    if parts is None:
        return a, b, gate
    blocks = sorted(k for k in parts if k >= 0)
    if (b is not None or gate is not None or blocks != list(range(a.shape[-1] // c))
            or a.shape[-1] % c):
        raise ValueError(f"long_conv_hadamard: parts {parts} must give each {c}-channel block "
                         f"of a ({a.shape[-1]} channels) one role, with b and gate None")
    return tuple(None if k < 0 else a[..., k * c:(k + 1) * c] for k in parts)


@on_input_device
def _long_conv_hadamard_impl(
    a: torch.Tensor, b: torch.Tensor | None, filt: torch.Tensor, skip: torch.Tensor | None,
    gate: torch.Tensor | None, keep: bool = False, parts: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(o, y, X): o = (T_h x + d ⊙ x) ⊙ g, x = a ⊙ b (with parts, a, b and g blocks of a:
    part_views); y = T_h x + d ⊙ x and X = rfft(xp) kept for the backward where keep
    (autograd's call; as long_conv_outputs says), else empty."""
    a, b, gate = part_views(a, b, gate, filt.shape[0], parts)
    if not a.numel():  # no tokens (an empty batch or sequence; FFTs refuse it): outputs empty
        return long_conv_outputs(a, b, gate, keep)
    n = a.shape[1]
    xp, _ = long_conv_in(a, b, None)
    spectrum = torch.fft.rfft(xp)  # [B, C, N + 1]
    hf = filter_spectrum(filt, n, xp.dtype)
    yp = torch.fft.irfft(spectrum * hf if keep else spectrum.mul_(hf), n=2 * n)  # [B, C, 2N]
    o, _, y = long_conv_out(yp, xp, skip, gate, None, n, keep and gate is not None,
                            result_dtype(a, b, gate))
    return (o, a.new_empty(0, dtype=o.dtype) if y is None else y,
            spectrum if keep else a.new_empty(0, dtype=complex_dtype(a, b)))


def _long_conv_hadamard_setup(ctx, inputs, output) -> None:
    a, b, filt, skip, gate, _, parts = inputs
    _, y, xf = output
    ctx.save_for_backward(a, b, filt, skip, gate, y, xf)
    ctx.parts = parts


@on_input_device
def _long_conv_hadamard_bwd_impl(
    a: torch.Tensor, b: torch.Tensor | None, filt: torch.Tensor, skip: torch.Tensor | None,
    gate: torch.Tensor | None, y: torch.Tensor | None, xf: torch.Tensor, do: torch.Tensor,
    filter_grad: bool = True, parts: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(da, db, dh, dd, dg) of o = (T_h x + d ⊙ x) ⊙ g, x = a ⊙ b, for the gradient do, each
    in its operand's dtype; db, dd and dg empty where b, d and g are absent, dh and dd where
    not filter_grad. y = T_h x + d ⊙ x and X = rfft(xp): the forward's. Two launches and
    three FFTs, a launch and an FFT more for dh (module docstring). With parts (a, b and g
    blocks of a: part_views), da is a's whole gradient: the kernels write each block's
    gradient in place (no concatenation), and db, dg are empty."""
    whole = a
    a, b, gate = part_views(a, b, gate, filt.shape[0], parts)
    grad = None if parts is None else torch.empty(whole.shape, dtype=whole.dtype,
                                                  device=whole.device)
    ga, gb, gg = (None, None, None) if grad is None else part_views(grad, None, None,
                                                                    filt.shape[0], parts)
    if not a.numel():  # no tokens (an empty batch or sequence; FFTs refuse it): zero gradients
        def zeros(t, on=True):
            return t.new_zeros(t.shape) if t is not None and on else a.new_empty(0)

        return (whole.new_zeros(whole.shape), zeros(None if parts else b),
                zeros(filt, filter_grad), zeros(skip, filter_grad),
                zeros(None if parts else gate))
    n = a.shape[1]
    if filter_grad and not xf.numel():
        raise ValueError("long_conv_hadamard's backward needs the spectrum X its forward keeps "
                         "with keep=True (custom_op_caller sets it where gradients run)")
    # dy = do ⊙ g padded; dg = do ⊙ y
    dyp, dg = long_conv_in(do, gate, y, None if gate is None else gate.dtype, gg)
    dyf = torch.fft.rfft(dyp)  # [B, C, N + 1]
    # each absent gradient an empty tensor of its own (outputs may not alias), as the fake's
    dh, dd = filt.new_empty(0), (a if skip is None else skip).new_empty(0)
    if filter_grad:
        lags = torch.fft.irfft(spectral_correlation(dyf, xf), n=2 * n)[:, :n]  # [C, N]: dh
        dh = filt.new_zeros(filt.shape)
        taps = min(n, filt.shape[1])
        dh[:, :taps] = lags[:, :taps]
        if skip is not None:
            dd = lags[:, 0].contiguous().to(skip.dtype)
    hf = filter_spectrum(filt, n, dyp.dtype)
    # a conjugate made, not lazy: AOTAutograd's runtime drops a conj view's bit (opcheck)
    dxp = torch.fft.irfft(dyf.mul_(hf.conj_physical()), n=2 * n)  # T_h^T dy at t < N
    da, db, _ = long_conv_out(dxp, dyp, skip, b, None if b is None else a, n, False, a.dtype,
                              None if b is None else b.dtype, None if grad is None else (ga, gb))
    if grad is not None:
        da, db, dg = grad, None, None
    return (da, a.new_empty(0) if db is None else db, dh, dd,
            a.new_empty(0) if dg is None else dg)


def _long_conv_hadamard_backward(ctx, do, *_):
    """Derived backward (module docstring); one op (_long_conv_hadamard_bwd_impl). Not
    differentiable again (a second derivative through it is not derived)."""
    if do is None:  # o's gradient is undefined (set_materialize_grads(False)): none flows
        return (None,) * 7
    a, b, filt, skip, gate, y, xf = ctx.saved_tensors
    some = lambda t: t if t.numel() else None  # noqa: E731 - empty marks an absent tensor
    bwd = (_long_conv_hadamard_bwd_impl if getattr(ctx, "eager", False)
           else getattr(torch.ops, LONG_CONV_OPS).long_conv_hadamard_bwd)
    filter_grad = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
    da, db, dh, dd, dg = bwd(a, b, filt, skip, gate, some(y), xf, do, filter_grad, ctx.parts)
    # each given operand's gradient (an empty batch's are empty or zero, not absent)
    return (da, None if b is None else db, dh if filter_grad else None,
            dd if filter_grad and skip is not None else None, None if gate is None else dg,
            None, None)


def _register_long_conv_hadamard():
    """torch.library custom ops (+ fake kernels + autograd), defined once per process and
    namespace (modules generated from the same source share them)."""
    try:
        ops = getattr(torch.ops, LONG_CONV_OPS)
        ops.long_conv_hadamard_bwd  # noqa: B018 - registered with the forward
        return ops.long_conv_hadamard
    except AttributeError:
        pass
    op = torch.library.custom_op(f"{LONG_CONV_OPS}::long_conv_hadamard", mutates_args=())(
        _long_conv_hadamard_impl)

    @op.register_fake
    def _(a, b, filt, skip, gate, keep=False, parts=None):
        return long_conv_outputs(*part_views(a, b, gate, filt.shape[0], parts), keep)

    bwd = torch.library.custom_op(f"{LONG_CONV_OPS}::long_conv_hadamard_bwd", mutates_args=())(
        _long_conv_hadamard_bwd_impl)

    @bwd.register_fake
    def _(a, b, filt, skip, gate, y, xf, do, filter_grad=True, parts=None):
        def like(t, shape, on=True):
            if t is None:
                return a.new_empty(0)
            return a.new_empty(shape if on else 0, dtype=t.dtype)

        whole = a
        a, b, gate = part_views(a, b, gate, filt.shape[0], parts)
        if parts is not None:  # the whole's gradient, b's and the gate's in it
            b = gate = None
        return (whole.new_empty(whole.shape), like(b, a.shape),
                like(filt, filt.shape, filter_grad),
                like(skip, skip.shape if skip is not None else 0, filter_grad),
                like(gate, a.shape))

    op.register_autograd(_long_conv_hadamard_backward, setup_context=_long_conv_hadamard_setup)
    return getattr(torch.ops, LONG_CONV_OPS).long_conv_hadamard


# o: y and X stay with autograd
long_conv_hadamard = custom_op_caller(_register_long_conv_hadamard(), _long_conv_hadamard_impl,
                                      _long_conv_hadamard_setup, _long_conv_hadamard_backward,
                                      grad_flag="keep", outputs=1)
'''


@dataclass(frozen=True)
class LongConvRegion:
    """A long_conv node with the product that makes its input and the one that gates it."""
    conv: int
    end: int  # the node whose value the call gives: the gating product, else the conv
    a: int  # the conv's input, or the first factor of the product that makes it
    b: int | None  # that product's other factor
    gate: int | None  # the other factor of the gating product
    product: int | None  # the product making the input (its value is never made)
    whole: int | None = None  # the tensor whose split parts a, b and the gate all are
    parts: tuple[int, int, int] | None = None  # their indexes in it (-1: absent)


def find_long_conv_regions(g: Graph, taken: set[int]) -> dict[int, LongConvRegion]:
    """{end: region} for every long_conv node, in a deterministic order. The conv absorbs the
    two-factor product that makes its input where the conv is that product's only reader, and
    the two-factor product that is its own only reader (the gate); `taken`: nodes other
    regions compute (a depthwise region's), which it does not absorb, nor another long
    convolution's output (a product of two long convolutions gates the first one's)."""
    regions: dict[int, LongConvRegion] = {}
    ends: set[int] = set()
    for nid, node, inputs in g.items():
        if node.op != "long_conv":
            continue
        a, b, product = inputs[0], None, None
        if (g.node(a).op == "hadamard" and len(g.inputs(a)) == 2 and g.users(a) == [nid]
                and a not in taken and a not in ends):
            product, (a, b) = a, g.inputs(a)
        end, gate = nid, None
        users = g.users(nid)
        if (len(users) == 1 and g.node(users[0]).op == "hadamard" and users[0] not in taken
                and users[0] not in ends):
            factors = g.inputs(users[0])
            if len(factors) == 2 and factors.count(nid) == 1:
                end, gate = users[0], factors[1 - factors.index(nid)]
        region = LongConvRegion(nid, end, a, b, gate, product)
        whole = _whole_split(g, region)
        if whole is not None:
            region = replace(region, whole=whole[0], parts=whole[1])
        regions[end] = region
        ends.add(end)
    return regions


def _whole_split(g: Graph, r: LongConvRegion) -> tuple[int, tuple[int, int, int]] | None:
    """(the split tensor, the indexes of a, b and the gate in it) where those operands are all
    the parts of one split, each read by the region alone: the op then reads the whole tensor
    and its backward writes the whole's gradient, part by part, with no concatenation."""
    operands = [n for n in (r.a, r.b, r.gate) if n is not None]
    nodes = [g.node(n) for n in operands]
    if (any(node.op != "split" for node in nodes)
            or len({node.a["index"] for node in nodes}) < len(operands)):
        return None
    wholes = {g.inputs(n)[0] for n in operands}
    if len(wholes) != 1 or any(node.a["parts"] != len(operands) for node in nodes):
        return None
    region_nodes = {r.conv, r.end} | ({r.product} if r.product is not None else set())
    if any(set(g.users(n)) - region_nodes or len(g.users(n)) != 1 for n in operands):
        return None
    parts = tuple(-1 if n is None else g.node(n).a["index"] for n in (r.a, r.b, r.gate))
    return wholes.pop(), parts


# the index identities behind the FFT formulas, at one channel: u and v of length n,
# zero-padded to 2n; `circular` and `correlation` are what irfft(U V) and irfft(U conj(V)) give
def circular(u: list, v: list, t: int, n2: int) -> sp.Expr:
    """sum_j u[j] v[(t - j) mod 2n]: the circular convolution at t."""
    return sum((u[j] * v[(t - j) % n2] for j in range(len(u)) if (t - j) % n2 < len(v)),
               sp.Integer(0))


def correlation(u: list, v: list, s: int, n2: int) -> sp.Expr:
    """sum_j u[j] v[(j - s) mod 2n]: the circular correlation at lag s."""
    return sum((u[j] * v[(j - s) % n2] for j in range(len(u)) if (j - s) % n2 < len(v)),
               sp.Integer(0))


def derivation_checks(n: int, corr: Callable[[list, list, int, int], sp.Expr] = correlation,
                      n2: int | None = None) -> dict[str, bool]:
    """The forward and backward of o = (T_h x + d x) ⊙ g at one channel and N = n, in sympy:
    each formula the runtime computes by FFTs of size n2 = 2n (through `corr` for the
    correlations) against the causal definition or its derivative. {name: holds}."""
    x, h, g, do = (list(sp.symbols(f"{p}0:{n}")) for p in ("x", "h", "g", "do"))
    d = sp.Symbol("d")
    n2 = 2 * n if n2 is None else n2
    y = [sum((h[t - s] * x[s] for s in range(t + 1)), sp.Integer(0)) + d * x[t]
         for t in range(n)]
    loss = sum((do[t] * y[t] * g[t] for t in range(n)), sp.Integer(0))
    dy = [do[t] * g[t] for t in range(n)]

    def same(a: sp.Expr, b: sp.Expr) -> bool:
        return sp.expand(a - b) == 0

    return {
        "T_h x = circular(x, h)[:N]": all(same(y[t] - d * x[t], circular(x, h, t, n2))
                                          for t in range(n)),
        "dx = corr(dy, h)[:N] + d dy": all(same(sp.diff(loss, x[s]),
                                                corr(dy, h, s, n2) + d * dy[s])
                                           for s in range(n)),
        "dh = corr(dy, x)[:N]": all(same(sp.diff(loss, h[k]), corr(dy, x, k, n2))
                                    for k in range(n)),
        "dd = corr(dy, x)[0]": same(sp.diff(loss, d), corr(dy, x, 0, n2)),
        "dg = do y": all(same(sp.diff(loss, g[t]), do[t] * y[t]) for t in range(n)),
    }


# no tl.dot in these kernels (the legality check's declarations)
DOT_TILES: dict[str, list] = {}
