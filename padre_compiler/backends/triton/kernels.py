'''Source text of the Triton kernels and their runtime, pasted into generated modules.

One fused form so far, `dwconv_hadamard`: a depthwise convolution (1-D or 2-D, centred or
causal; a 1-D map is a 2-D one on a 1 x N grid) with its bias, the bias of the dense map that
wrote its input (optional, folded by linearity), an optional Hadamard gate and an optional
weighted accumulation into a running sum:

    u = conv(x + in_bias; weight) + bias      z = u ⊙ gate      o = acc_scale ⊙ acc + scale ⊙ z

Every generated file carries, side by side, the optimised kernel, its naive PyTorch twin (the
path taken where Triton cannot run: no CUDA device and TRITON_INTERPRET unset, or float64),
the launcher with its block-size choice, the backward derived by the compiler (adjoint of the
convolution = convolution with flipped taps and mirrored padding; Hadamard product rule), and
the torch.library registration (custom op + fake kernel + autograd) so torch.compile traces it.
Every launch goes through launch.py's `start` (grids within CUDA's limits), whose definitions
SHARED pastes (`pasted`): the CAOTE launcher and the legality checker import the same code.

Two forms compute it. The direct form (here: CUDA cores, every tap a shifted load) serves
every conv. The tensor-core form (toeplitz.py: banded Toeplitz products) serves 2-D maps, so
only a module with 2-D maps carries its text (KERNEL + RUNTIME of both modules, in that
order); the launchers here reach it through the module constant TENSOR_CORES, which a module
of 1-D convs sets to None (DIRECT_ONLY).
'''

from __future__ import annotations

import ast
import inspect
from types import ModuleType

from padre_compiler.backends.triton import launch


def pasted(module: ModuleType) -> str:
    """`module`'s definitions as source for a generated module: its text after its last
    import (it may import only what STDLIB_IMPORTS holds, and annotate with builtins alone:
    generated files evaluate annotations). Code that runs outside generated modules too
    (launch: the CAOTE launcher's, the legality checker's) is written once, in such a
    module."""
    source = inspect.getsource(module)
    body = ast.parse(source).body
    end = max(st.end_lineno for st in body if isinstance(st, (ast.Import, ast.ImportFrom)))
    return "".join(source.splitlines(keepends=True)[end:])


# the imports of a generated file (unused ones are dropped): the standard library's, for the
# launchers (with SHARED), then torch's, for every file
STDLIB_IMPORTS = '''
import contextlib
import contextvars
import functools
import inspect
import os
import types
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
'''

TORCH_IMPORTS = '''
import torch
import torch.nn.functional as F
from torch import nn
'''

# Triton's import and the helpers of every family's launchers
SHARED = '''
try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: every fused region runs its naive PyTorch twin
    triton = None

# the kernels were defined under the CPU interpreter (TRITON_INTERPRET=1 when this file loaded)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _use_triton(x: torch.Tensor) -> bool:
    """Whether x's op runs the kernels: on CUDA tensors, or on CPU ones under the interpreter,
    but not in bfloat16 there (its tl.dot on bfloat16 is wrong; the naive twins run)."""
    if triton is None or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    if INTERPRETED:
        return x.device.type == "cpu" and x.dtype != torch.bfloat16
    return x.is_cuda


def cdiv(a: int, b: int) -> int:
    return -(-a // b)



def next_power_of_2(n: int) -> int:
    """The least power of two >= n >= 1 (triton's is a constexpr function, slow to call)."""
    return 1 << (n - 1).bit_length()

''' + pasted(launch) + '''

def index_widths(*tensors: torch.Tensor | None) -> dict[str, bool]:
    """The kernels' offset widths for these [B, N, C] tensors (the Toeplitz band's, sized by C
    alone, its launcher adds), as launch flags: I64 where an
    element offset of any reaches 2**31 (batch offsets in int64), WIDE where an offset inside
    one image ([N, C] at its strides) does too (token offsets in int64 as well; a conv then
    takes the direct form, the tensor-core kernels indexing inside an image in int32). The
    largest offset of a view is sum((size - 1) * |stride|). Plain loops and a contiguous
    tensor's shortcut: this runs on every launch, in host time."""
    i64 = False
    for t in tensors:
        if t is None or (t.is_contiguous() and t.numel() <= 2**31):
            continue
        shape, stride = t.shape, t.stride()
        image = 0
        for k in range(1, len(shape)):
            image += (shape[k] - 1) * abs(stride[k])
        if image >= 2**31:
            return {"I64": True, "WIDE": True}
        i64 = i64 or image + (shape[0] - 1) * abs(stride[0]) >= 2**31
    return {"I64": i64, "WIDE": False}


def channel_rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """t with channel stride 1 (any batch/token strides: slices of a wider tensor stay views)."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def channel_vectors(*vectors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The [C] biases and scales with stride 1, as the kernels index them (o_c)."""
    return tuple(v if v is None else v.contiguous() for v in vectors)


def on_input_device(impl):
    """`impl` run with its first argument's CUDA device current: Triton launches on the
    current device, so tensors on cuda:1 under current device 0 would fail to launch (or, with
    peer access, run on the wrong GPU and stream). The signature is impl's (custom ops read
    it)."""
    @functools.wraps(impl)
    def run(*args, **kwargs):
        x = args[0]
        if x.is_cuda and x.device.index != torch.cuda.current_device():
            with torch.cuda.device(x.device):
                return impl(*args, **kwargs)
        return impl(*args, **kwargs)

    return run


def custom_op_caller(op, impl, setup_context, backward, grad_flag: str | None = None,
                     outputs: int | None = None):
    """Call `impl` (the custom op `op`'s implementation) as cheaply as the call allows:
    - under a torch.compile trace, through `op` (its fake kernel and registered autograd);
    - where eager autograd needs it (an argument requires grad, gradients on), through a
      torch.autograd.Function made of `impl`, `setup_context` and `backward`, the functions
      `op` registered: the same graph without the dispatcher's layers around the op;
    - else `impl` itself.
    Host time: benchmarks/host_overhead.py. `backward` sees ctx.eager on the Function path
    (so it may call implementations instead of ops) and None for the gradient of an output
    nothing read (no zeros are made for it). The keyword `grad_flag` tells `impl`
    whether a backward will run; `outputs`: the leading outputs returned (the rest are for
    the backward)."""
    params = inspect.signature(impl).parameters
    names = list(params)

    class Eager(torch.autograd.Function):  # ctx in forward: cheaper than setup_context apart
        @staticmethod
        def forward(ctx, *args):
            out = impl(*args)
            ctx.eager = True
            ctx.set_materialize_grads(False)  # an unused output's gradient: None, not zeros
            if outputs is not None:  # the outputs kept for the backward
                ctx.mark_non_differentiable(*out[outputs:])
            setup_context(ctx, args, out)
            return out

        @staticmethod
        def backward(ctx, *grads):
            if torch.is_grad_enabled():  # create_graph: the kernels' backward has no graph
                # (once_differentiable's deferred error never fires for autograd.grad(...,
                # inputs) past this node: a second derivative silently lost its terms)
                raise RuntimeError(f"{op}: the fused Triton backward is not differentiable, so "
                                   "a second derivative through it cannot be taken "
                                   "(create_graph=True); compile with backend='torch' for "
                                   "higher derivatives")
            return backward(ctx, *grads)

    def call(*args, **kwargs):
        grads = torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                                for a in (*args, *kwargs.values()))
        if grad_flag is not None:
            kwargs[grad_flag] = grads
        if torch.compiler.is_compiling():
            out = op(*args, **kwargs)
        elif grads:  # Function.apply takes positional arguments only
            out = Eager.apply(*args, *(kwargs[n] if n in kwargs else params[n].default
                                       for n in names[len(args):]))
        else:
            out = impl(*args, **kwargs)
        return out if outputs is None else out[:outputs]

    call.__doc__ = f"{op}: its implementation, an autograd.Function of it, or the op itself."
    return call


if triton is not None:

    @triton.jit
    def outer_tile(tiles, I64: tl.constexpr):
        """Axis 0 runs each outer index's `tiles` tiles in turn (an image's, or a batch and
        head's; up to 2**31 - 1 programs, where axes 1 and 2 take 65,535): this program's
        (outer index, tile), the outer index in int64 with I64 (its offsets reach 2**31)."""
        outer, tile = tl.program_id(0) // tiles, tl.program_id(0) % tiles
        if I64:
            outer = outer.to(tl.int64)
        return outer, tile


    @triton.jit
    def grid_axis1(FOLD: tl.constexpr):
        """This program's index on axis 1 of its logical grid: program_id(1), or, FOLD (start
        split that axis over axes 1 and 2: legal_grid), program_id(1) + num_programs(1) *
        program_id(2), in int64 (up to 65,535**2 programs)."""
        i = tl.program_id(1)
        if FOLD:
            i = tl.program_id(2).to(tl.int64) * tl.num_programs(1) + i
        return i
'''

# the generated module's constant naming this family's torch.ops namespace
OPS_NAME = "DWCONV_OPS"

KERNEL = '''
if triton is not None:

    @triton.jit
    def inside(v, n):
        """0 <= v < n (v: an int32 or int64 tensor with |v| < 2**31, as a grid row or column
        offset by a tap is; n >= 0 below 2**31) in one unsigned compare: a negative v wraps
        above n (the cast keeps v's low 32 bits)."""
        return v.to(tl.uint32) < n.to(tl.uint32)


    @triton.jit
    def accumulate(p, v, mask, PARTIAL: tl.constexpr):
        """*p += v (fp32) for a sum over programs: an atomic add, in whatever order the
        programs run; or, PARTIAL, a load and a store, p being in this program's own row of
        partial sums, which the host adds in a fixed order (bitwise reproducible). A caller
        that adds to one address more than once (the weight gradient, once per row tile) does
        so from loop iterations that are not pipelined against each other (its pipelined tap
        loop writes a different address each iteration), so each load sees the last store.
        The load and the store may lay `v` out over threads differently (sm_90: a slice
        layout loads, a blocked one stores), so one address can belong to different threads
        in the two: the barrier after the store orders them (the CTA's threads see each
        other's global stores past a bar.sync)."""
        if PARTIAL:
            tl.store(p, tl.load(p, mask=mask) + v, mask=mask)
            tl.debug_barrier()
        else:
            tl.atomic_add(p, v, mask=mask)


    @triton.jit(do_not_specialize=["N", "H", "W"])  # one compile for every grid
    def dwconv_hadamard_fwd_kernel(
        x, w, b, g, a, sa, s, z, o,
        s_xb, s_xn, s_xc, s_gb, s_gn, s_ab, s_an,  # strides (elements); g, a: channel stride 1
        N, C, H, W,
        KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_ACC: tl.constexpr,
        HAS_ACC_SCALE: tl.constexpr, HAS_SCALE: tl.constexpr,
        STORE_Z: tl.constexpr, STORE_O: tl.constexpr,
        BT: tl.constexpr, BC: tl.constexpr,
        I64: tl.constexpr = False, WIDE: tl.constexpr = False, FOLD: tl.constexpr = False,
    ):
        """One [BT tokens, BC channels] tile of z = (conv(x) + b) * g, o = sa * a + s * z.

        x: [B, N, C], any strides (token-major, or channel-major views: the JIT specialises
        the stride that is 1); g, a: [B, N, C] with channel stride 1; w: [C, KH, KW];
        b, s, sa: [C]; z, o: [B, N, C] contiguous. Token t sits at row t // W, column t % W
        of the H x W grid; tap (i, j) reads x[h + i - PH, w + j - PW] (zero outside). fp32
        accumulation. WIDE (with I64): an image spans 2**31 elements, token offsets in int64.
        """
        i_b, i_t = outer_tile(tl.cdiv(N, BT), I64)  # an image's token tiles; I64: index_widths
        i_c = grid_axis1(FOLD)
        o_t = i_t * BT + tl.arange(0, BT)  # [BT] output tokens
        o_c = i_c * BC + tl.arange(0, BC)  # [BC] channels
        if WIDE:  # an image spans 2**31 elements (index_widths): token and channel offsets in
            # int64 too (a channel-major x strides its channels by N: (C - 1) N >= 2**31)
            o_t, o_c = o_t.to(tl.int64), o_c.to(tl.int64)
        m_t = o_t < N
        m_c = o_c < C
        o_h = o_t // W
        o_w = o_t % W
        b_u = tl.zeros([BT, BC], dtype=tl.float32)  # [BT, BC] conv accumulator
        for i_kh in range(KH):  # runtime loops: unrolled taps spill (backends/triton/aot.py)
            o_hi = o_h + (i_kh - PH)
            m_h = m_t & inside(o_hi, H)
            for i_kw in range(KW):
                o_wi = o_w + (i_kw - PW)
                m_x = m_h & inside(o_wi, W)
                p_x = x + i_b * s_xb + (o_hi * W + o_wi)[:, None] * s_xn + o_c[None, :] * s_xc
                b_x = tl.load(p_x, mask=m_x[:, None] & m_c[None, :], other=0.)  # [BT, BC]
                b_w = tl.load(w + o_c * (KH * KW) + (i_kh * KW + i_kw), mask=m_c, other=0.)
                b_u += b_x.to(tl.float32) * b_w.to(tl.float32)[None, :]
        if HAS_BIAS:
            b_u += tl.load(b + o_c, mask=m_c, other=0.).to(tl.float32)[None, :]
        m = m_t[:, None] & m_c[None, :]
        b_z = b_u
        if HAS_GATE:
            p_g = g + i_b * s_gb + o_t[:, None] * s_gn + o_c[None, :]
            b_z = b_z * tl.load(p_g, mask=m, other=0.).to(tl.float32)
        if STORE_Z:
            p_z = z + i_b * N * C + o_t[:, None] * C + o_c[None, :]
            tl.store(p_z, b_z.to(z.dtype.element_ty), mask=m)
        if STORE_O:
            b_o = b_z
            if HAS_SCALE:
                b_o = b_o * tl.load(s + o_c, mask=m_c, other=0.).to(tl.float32)[None, :]
            if HAS_ACC:
                p_a = a + i_b * s_ab + o_t[:, None] * s_an + o_c[None, :]
                b_a = tl.load(p_a, mask=m, other=0.).to(tl.float32)
                if HAS_ACC_SCALE:
                    b_a = b_a * tl.load(sa + o_c, mask=m_c, other=0.).to(tl.float32)[None, :]
                b_o += b_a
            p_o = o + i_b * N * C + o_t[:, None] * C + o_c[None, :]
            tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m)


    @triton.jit(do_not_specialize=["N", "H", "W"])  # one compile for every grid
    def dwconv_hadamard_bwd_kernel(
        x, w, b, g, a, sa, s, dz, do, u,  # forward inputs; gradients of z and o; u (or x)
        du, dg, da, dw, db, ds, dsa,  # outputs; dw, db, ds, dsa: fp32 sums over programs
        s_xb, s_xn, s_xc, s_gb, s_gn, s_ab, s_an,  # strides (elements); g, a: channel stride 1
        s_dub, s_dun, s_duc,  # du's strides (channel-major for the tensor-core kernels after)
        N, C, H, W,
        KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_ACC: tl.constexpr,
        HAS_ACC_SCALE: tl.constexpr, HAS_SCALE: tl.constexpr,
        HAS_DZ: tl.constexpr, HAS_DO: tl.constexpr, RECOMPUTE: tl.constexpr,
        USES_U: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
        I64: tl.constexpr = False, PARTIAL: tl.constexpr = False, WIDE: tl.constexpr = False,
        FOLD: tl.constexpr = False,
    ):
        """Backward of dwconv_hadamard_fwd_kernel on one [BT, BC] tile, derived by the compiler.

        dz_tot = dz + s * do;  du = dz_tot * g;  dg = dz_tot * u;  da = sa * do;
        dw[c, i, j] += sum_t du[t, c] x[t + tap(i, j), c];  db += sum_t du;
        ds += sum_t do * z;  dsa += sum_t do * a.  u enters dg and ds alone (USES_U: a gate,
        or do and s); without them no u is formed or read. RECOMPUTE: u = conv(x) + b is
        recomputed from the same shifted loads that feed dw; else u is read (the tensor-core
        forward wrote it, in a module with 2-D maps) and dw is dwconv_toeplitz_wgrad_kernel's.
        dx (the adjoint conv of du) is a launch of the forward kernel with flipped taps. dg,
        da: [B, N, C] contiguous; du: any strides. db, ds, dsa: [C] atomic sums, or PARTIAL:
        [B * programs along tokens, C] rows of partial sums, one a program (deterministic); dw
        then is not formed here.
        WIDE (with I64): an image spans 2**31 elements, token and channel offsets in int64.
        """
        tl.static_assert(USES_U == (HAS_GATE or (HAS_DO and HAS_SCALE)),
                         "u is read by dg (a gate) and ds (do with a scale) alone")
        tiles = tl.cdiv(N, BT)
        i_b, i_t = outer_tile(tiles, I64)  # an image's token tiles; I64: index_widths
        i_c = grid_axis1(FOLD)
        if PARTIAL:  # this program's row of the [B * programs along tokens, C] partial sums
            p_row = (i_b * tiles + i_t) * C
            db, ds, dsa = db + p_row, ds + p_row, dsa + p_row
        o_t = i_t * BT + tl.arange(0, BT)  # [BT] tokens
        o_c = i_c * BC + tl.arange(0, BC)  # [BC] channels
        if WIDE:  # an image spans 2**31 elements (index_widths): token and channel offsets in
            # int64 too (a channel-major du strides its channels by N: (C - 1) N >= 2**31)
            o_t, o_c = o_t.to(tl.int64), o_c.to(tl.int64)
        m_t = o_t < N
        m_c = o_c < C
        m = m_t[:, None] & m_c[None, :]
        o_h = o_t // W
        o_w = o_t % W
        p_out = i_b * N * C + o_t[:, None] * C + o_c[None, :]  # contiguous [B, N, C] offsets
        b_dzt = tl.zeros([BT, BC], dtype=tl.float32)  # [BT, BC] gradient of z, all paths
        if HAS_DZ:
            b_dzt += tl.load(dz + p_out, mask=m, other=0.).to(tl.float32)
        if HAS_DO:
            b_do = tl.load(do + p_out, mask=m, other=0.).to(tl.float32)
            if HAS_SCALE:
                b_s = tl.load(s + o_c, mask=m_c, other=0.).to(tl.float32)
                b_dzt += b_do * b_s[None, :]
            else:
                b_dzt += b_do
        b_du = b_dzt
        if HAS_GATE:
            p_g = g + i_b * s_gb + o_t[:, None] * s_gn + o_c[None, :]
            b_g = tl.load(p_g, mask=m, other=0.).to(tl.float32)
            b_du = b_dzt * b_g
        if RECOMPUTE and (USES_U or not PARTIAL):  # u = conv(x) + b from the shifted loads
            # that also give dw (not PARTIAL)
            if USES_U:
                b_u = tl.zeros([BT, BC], dtype=tl.float32)  # [BT, BC] recomputed conv
            for i_kh in range(KH):
                o_hi = o_h + (i_kh - PH)
                m_h = m_t & inside(o_hi, H)
                for i_kw in range(KW):
                    o_wi = o_w + (i_kw - PW)
                    m_x = m_h & inside(o_wi, W)
                    p_x = (x + i_b * s_xb + (o_hi * W + o_wi)[:, None] * s_xn
                           + o_c[None, :] * s_xc)
                    b_x = tl.load(p_x, mask=m_x[:, None] & m_c[None, :], other=0.)
                    b_x = b_x.to(tl.float32)
                    b_w = tl.load(w + o_c * (KH * KW) + (i_kh * KW + i_kw), mask=m_c, other=0.)
                    if USES_U:
                        b_u += b_x * b_w.to(tl.float32)[None, :]
                    if not PARTIAL:
                        tl.atomic_add(dw + o_c * (KH * KW) + (i_kh * KW + i_kw),
                                      tl.sum(b_du * b_x, axis=0), mask=m_c)
            if HAS_BIAS and USES_U:
                b_u += tl.load(b + o_c, mask=m_c, other=0.).to(tl.float32)[None, :]
        elif USES_U:  # u given ([B, N, C] contiguous, bias included); dw: the wgrad kernel
            b_u = tl.load(u + p_out, mask=m, other=0.).to(tl.float32)
        if HAS_BIAS:
            accumulate(db + o_c, tl.sum(b_du, axis=0), m_c, PARTIAL)
        tl.store(du + i_b * s_dub + o_t[:, None] * s_dun + o_c[None, :] * s_duc,
                 b_du.to(du.dtype.element_ty), mask=m)
        if HAS_GATE:
            tl.store(dg + p_out, (b_dzt * b_u).to(dg.dtype.element_ty), mask=m)
        if HAS_DO:
            if HAS_SCALE:
                b_z = b_u
                if HAS_GATE:
                    b_z = b_u * b_g
                accumulate(ds + o_c, tl.sum(b_do * b_z, axis=0), m_c, PARTIAL)
            if HAS_ACC:
                p_a = a + i_b * s_ab + o_t[:, None] * s_an + o_c[None, :]
                if HAS_ACC_SCALE:
                    b_a = tl.load(p_a, mask=m, other=0.).to(tl.float32)
                    accumulate(dsa + o_c, tl.sum(b_do * b_a, axis=0), m_c, PARTIAL)
                    b_sa = tl.load(sa + o_c, mask=m_c, other=0.).to(tl.float32)
                    tl.store(da + p_out, (b_do * b_sa[None, :]).to(da.dtype.element_ty), mask=m)
                else:
                    tl.store(da + p_out, b_do.to(da.dtype.element_ty), mask=m)
'''

RUNTIME = '''
def naive_dwconv_hadamard(x, weight, bias, gate, acc, acc_scale, scale, height: int,
                          width: int, pad_h: int, pad_w: int, store_z: bool, store_o: bool,
                          in_bias=None):
    """Naive twin of the forward kernels in PyTorch (same contract; fp32 math, fp64 for fp64
    inputs): the conv of x + in_bias, by definition."""
    b, n, c = x.shape
    kh, kw = weight.shape[1], weight.shape[2]
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xb = x.to(dt) if in_bias is None else x.to(dt) + in_bias.to(dt)
    x4 = xb.transpose(1, 2).reshape(b, c, height, width)
    x4 = F.pad(x4, (pad_w, kw - 1 - pad_w, pad_h, kh - 1 - pad_h))
    u = F.conv2d(x4, weight.to(dt).unsqueeze(1), None if bias is None else bias.to(dt),
                 groups=c).flatten(2).transpose(1, 2)
    zz = u if gate is None else u * gate.to(dt)
    oo = zz if scale is None else zz * scale.to(dt)
    if acc is not None:
        oo = oo + (acc.to(dt) if acc_scale is None else acc.to(dt) * acc_scale.to(dt))
    zz = zz.to(x.dtype).contiguous() if store_z else x.new_empty(0)
    oo = oo.to(x.dtype).contiguous() if store_o else x.new_empty(0)
    if oo.numel() and oo.untyped_storage().data_ptr() in (
            zz.untyped_storage().data_ptr(), x.untyped_storage().data_ptr()):
        oo = oo.clone()  # custom-op outputs may not alias inputs or each other
    if zz.numel() and zz.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        zz = zz.clone()
    return zz, oo



# GPU tiles below compile for sm_90 without register spills (stack 0 in ptxas's resource
# usage; benchmarks/results/triton_aot.md, tests/triton/test_triton_aot.py)
def dwconv_hadamard_config(n: int, c: int, gpu: bool, backward: bool = False
                           ) -> dict[str, int]:
    """Block sizes of the direct kernels (powers of two; see backends/triton/legality.py).
    The backward tile holds four [BT, BC] fp32 tensors live: 8 warps on a GPU."""
    bc = min(64 if gpu else 128, next_power_of_2(c))
    bt = min(64 if gpu else 256, next_power_of_2(n))
    return {"BT": bt, "BC": bc, "num_warps": (8 if backward else 4) if gpu else 1}


# PADRE_TRITON_CONV's values that force the tensor-core form: plain, or with its strips from
# one slab per program in one or two column parts (toeplitz.py's SLAB_FORMS)
TENSOR_CORE_FORMS = ("toeplitz", "slab", "slab2")


def conv_form(x: torch.Tensor, height: int, kw: int, dtype: torch.dtype | None = None,
              kh: int = 1) -> str:
    """'toeplitz' (tensor cores) where this module carries that form (TENSOR_CORES: modules
    with 2-D maps) and it takes the conv (TENSOR_CORES.takes), else 'direct' (CUDA cores);
    `dtype`: the conv input's dtype where x is not that input yet (default x.dtype).

    PADRE_TRITON_CONV=direct|toeplitz|slab|slab2 forces one (the CPU tests run each in the
    interpreter): the tensor-core form where the module carries it; a module of 1-D convs has
    the direct form alone, as a GPU would run them.
    """
    forced = os.environ.get("PADRE_TRITON_CONV", "")
    if TENSOR_CORES is None or forced == "direct":
        return "direct"
    if forced in TENSOR_CORE_FORMS:
        return "toeplitz"
    return "toeplitz" if TENSOR_CORES.takes(x, height, kw, dtype, kh) else "direct"


def tensor_core_form(x: torch.Tensor, channels: int, height: int, kh: int, kw: int,
                     dtype: torch.dtype | None = None) -> bool:
    """Whether the conv of `channels` channels and kh x kw taps on x's B images of N tokens in
    `height` rows runs in the Toeplitz form (x: [B, N, ...], the conv's input or the dense
    map's that writes it; `dtype`: the conv input's, default x.dtype): conv_form's choice,
    unless a Toeplitz launch of its scope has failed (TENSOR_CORES.failed). dense_for_conv
    (the layout it stores), the forward launcher and the backward all decide by it, so they
    agree: once a conv's Toeplitz launch failed, it gets token-major input and the direct
    kernels, forward and backward (which then recomputes u, never reading one the failed
    forward left unwritten)."""
    return (conv_form(x, height, kw, dtype, kh=kh) == "toeplitz"
            and not TENSOR_CORES.failed(x, channels, height, kh, kw, dtype))


@on_input_device
def _dwconv_hadamard_impl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gate: torch.Tensor | None,
    acc: torch.Tensor | None, acc_scale: torch.Tensor | None, scale: torch.Tensor | None,
    height: int, width: int, pad_h: int, pad_w: int, store_z: bool, store_o: bool,
    in_bias: torch.Tensor | None = None, keep_u: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, o, u) of the forward kernels on x + in_bias; an output not asked for is an empty
    tensor. keep_u (autograd's call): u = conv(x + in_bias) + bias where keeps_u says the
    backward would otherwise recompute it."""
    check_grid(height, width, x, gate, acc)
    bias, acc_scale, scale, in_bias = channel_vectors(bias, acc_scale, scale, in_bias)
    if not _use_triton(x):
        return (*naive_dwconv_hadamard(x, weight, bias, gate, acc, acc_scale, scale, height,
                                       width, pad_h, pad_w, store_z, store_o, in_bias),
                x.new_empty(0, dtype=torch.float32))
    z, o, u = forward_outputs(x, weight, gate, scale, height, store_z, store_o, keep_u)
    dwconv_hadamard_launch(x, weight, bias, gate, acc, acc_scale, scale, height, width, pad_h,
                           pad_w, z if store_z else None, o if store_o else None, in_bias,
                           u if u.numel() else None)
    return z, o, u


def forward_outputs(x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor | None,
                    scale: torch.Tensor | None, height: int, store_z: bool, store_o: bool,
                    keep_u: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward op's (z, o, u), unwritten: [B, N, C] contiguous (z, o in x's dtype; u
    float32, as a recompute gives it) or empty where not stored. The implementation and the
    fake kernel both allocate through it, so their shapes agree."""
    def out(stored: bool, dtype: torch.dtype) -> torch.Tensor:
        return x.new_empty(x.shape if stored else 0, dtype=dtype)

    kept = keep_u and keeps_u(x, weight, height, gate, scale, store_o)
    return out(store_z, x.dtype), out(store_o, x.dtype), out(kept, torch.float32)


def keeps_u(x: torch.Tensor, weight: torch.Tensor, height: int, gate: torch.Tensor | None,
            scale: torch.Tensor | None, store_o: bool) -> bool:
    """Whether the forward stores u = conv(x + bi) + b (float32, [B, N, C]; bi the input
    bias, if any) for its backward: where
    the Triton kernels run in the Toeplitz form, whose backward would otherwise recompute u for
    dg (a gate) or ds (o's gradient with a scale), a conv launch against one store; the direct
    form's backward recomputes u from the loads that give dw anyway. It depends on the call
    alone, as the fake kernel's output shapes must: once a Toeplitz launch of the conv's scope
    has failed (TENSOR_CORES.failed) u is allocated but not written, and no backward reads it
    (tensor_core_form: the conv's backward takes the direct form from then on)."""
    return ((gate is not None or (store_o and scale is not None)) and _use_triton(x)
            and conv_form(x, height, weight.shape[2], kh=weight.shape[1]) == "toeplitz"
            and not index_widths(x, gate)["WIDE"])


def check_grid(height: int, width: int, *tensors: torch.Tensor | None) -> None:
    """Each [B, N, C] tensor fills the H x W grid: N = H * W tokens."""
    for t in tensors:
        if t is not None and t.shape[1] != height * width:
            raise ValueError(f"{t.shape[1]} tokens do not fill the {height} x {width} grid (N "
                             "must equal H * W)")


def conv_tail(dummy, gate, acc, acc_scale, scale, z, o) -> tuple:
    """The conv forward kernels' arguments after the input, the taps and the bias (the input's
    strides follow): the gate, the accumulator, their scales and the outputs, `dummy` for an
    absent one (never read: its HAS_* flag is off)."""
    return (dummy if gate is None else gate, dummy if acc is None else acc,
            dummy if acc_scale is None else acc_scale, dummy if scale is None else scale, z, o)


def row_strides(t: torch.Tensor | None) -> tuple[int, int]:
    """t's (batch, token) strides, (0, 0) for an absent one."""
    return (0, 0) if t is None else t.stride()[:2]


def dwconv_hadamard_launch(x, weight, bias, gate, acc, acc_scale, scale, height: int, width: int,
                           pad_h: int, pad_w: int, z, o, in_bias=None, u=None) -> None:
    """Launch the fused kernel writing z and/or o ([B, N, C] contiguous; None: not stored) of
    the input x + in_bias (in_bias: [C] or None), and u = conv(x + in_bias) + bias where u (the
    same layout) is given: the tensor-core form stores it; the direct form leaves it unwritten
    (keeps_u). The tensor-core form runs where tensor_core_form takes the conv and its launch
    succeeds (TENSOR_CORES.launch), else the direct kernel."""
    b, n, c = x.shape
    store_z, store_o = z is not None, o is not None
    z = x if z is None else z  # placeholders when not stored, never written
    o = x if o is None else o

    gate, acc = channel_rows(gate), channel_rows(acc)  # x: any strides
    widths = index_widths(x, gate, acc, z, o, u)  # WIDE: the direct form, in int64
    wide = widths["WIDE"]
    kh, kw = weight.shape[1], weight.shape[2]
    weight = weight.contiguous()
    flags = dict(
        KH=kh, KW=kw, PH=pad_h, PW=pad_w,
        HAS_BIAS=bias is not None, HAS_GATE=gate is not None, HAS_ACC=acc is not None,
        HAS_ACC_SCALE=acc_scale is not None, HAS_SCALE=scale is not None,
        STORE_Z=store_z, STORE_O=store_o, I64=widths["I64"],
    )
    if (tensor_core_form(x, c, height, kh, kw) and not wide
            and TENSOR_CORES.launch(x, weight, bias, gate, acc, acc_scale, scale, height, width,
                                    pad_h, pad_w, z, o, in_bias, u, flags)):
        return
    if in_bias is not None:  # the direct kernel takes no input bias: one torch pass adds it
        x = x + in_bias.to(x.dtype)
    dummy = x  # never read: the matching HAS_* flag is off
    cfg = dwconv_hadamard_config(n, c, x.is_cuda)
    grid = (b * cdiv(n, cfg["BT"]), cdiv(c, cfg["BC"]))  # each image's token tiles on axis 0
    start(dwconv_hadamard_fwd_kernel, grid)(
        x, weight, dummy if bias is None else bias,
        *conv_tail(dummy, gate, acc, acc_scale, scale, z, o), *x.stride(), *row_strides(gate),
        *row_strides(acc), n, c, height, width, **flags, WIDE=wide, **cfg)


def _depthwise_weight_grad(x, du, kh: int, kw: int, height: int, width: int, pad_h: int,
                           pad_w: int) -> torch.Tensor:
    """d weight[c, i, j] = sum_{b, t} du[b, t, c] x[b, t + tap(i, j), c], fp32 (torch's
    conv2d_weight): the naive twin of the direct backward kernel's dw (and of the tensor-core
    form's dwconv_toeplitz_wgrad_kernel, in a module with 2-D maps). Also the weight gradient
    where that kernel failed to compile, and the direct form's under deterministic algorithms
    (its kernel's dw is a sum of atomic adds)."""
    b, n, c = x.shape
    x4 = F.pad(x.transpose(1, 2).reshape(b, c, height, width),
               (pad_w, kw - 1 - pad_w, pad_h, kh - 1 - pad_h))
    du4 = du.transpose(1, 2).reshape(b, c, height, width)
    return torch.nn.grad.conv2d_weight(x4, (c, 1, kh, kw), du4, groups=c)[:, 0]


def _dwconv_hadamard_setup(ctx, inputs, output) -> None:
    (x, weight, bias, gate, acc, acc_scale, scale, height, width, pad_h, pad_w, sz, so,
     in_bias, _) = inputs
    ctx.save_for_backward(x, weight, bias, gate, acc, acc_scale, scale, in_bias, output[2])
    ctx.geometry = (height, width, pad_h, pad_w, sz, so)


def naive_dwconv_hadamard_bwd(x, weight, bias, gate, acc, acc_scale, scale, dz, do,
                              height: int, width: int, pad_h: int, pad_w: int, in_bias=None):
    """Naive twin of the kernel backward in PyTorch: (dx, dg, da, dw, db, ds, dsa, dbi), dx
    the adjoint conv of du (flipped taps, mirrored padding), dbi = sum of dx over tokens."""
    kh, kw = weight.shape[1], weight.shape[2]
    f32 = torch.float64 if x.dtype == torch.float64 else torch.float32
    xb = x.to(f32) if in_bias is None else x.to(f32) + in_bias.to(f32)
    u = naive_dwconv_hadamard(xb, weight, bias, None, None, None, None, height, width,
                              pad_h, pad_w, True, False)[0]
    dzt = torch.zeros_like(u) if dz is None else dz.to(f32)
    do = None if do is None else do.to(f32)
    if do is not None:
        dzt = dzt + (do if scale is None else do * scale.to(f32))
    g = None if gate is None else gate.to(f32)
    du = dzt if g is None else dzt * g
    empty = lambda: x.new_empty(0)  # noqa: E731 - a fresh one each: outputs may not alias
    d_gate = empty() if gate is None else (dzt * u).to(gate.dtype).contiguous()
    d_acc, d_acc_scale, d_scale = empty(), empty(), empty()
    if do is not None and acc is not None:
        d_acc = (do if acc_scale is None else do * acc_scale.to(f32)).to(acc.dtype).contiguous()
        if acc_scale is not None:
            d_acc_scale = (do * acc.to(f32)).sum((0, 1)).to(acc_scale.dtype)
    if do is not None and scale is not None:
        zz = u if g is None else u * g
        d_scale = (do * zz).sum((0, 1)).to(scale.dtype)
    d_w = _depthwise_weight_grad(xb, du, kh, kw, height, width, pad_h, pad_w)
    d_b = empty() if bias is None else du.sum((0, 1)).to(bias.dtype)
    d_x = naive_dwconv_hadamard(du, weight.flip(1, 2), None, None, None, None, None, height,
                                width, kh - 1 - pad_h, kw - 1 - pad_w, True, False)[0]
    d_in_bias = empty() if in_bias is None else d_x.sum((0, 1)).to(in_bias.dtype)
    outs = (d_x.to(x.dtype), d_gate, d_acc, d_w.to(weight.dtype), d_b, d_scale, d_acc_scale,
            d_in_bias)
    # custom-op outputs may not alias inputs or each other
    seen = {t.untyped_storage().data_ptr() for t in (dz, do, x) if t is not None and t.numel()}
    fresh = []
    for t in outs:
        if t.numel():
            if t.untyped_storage().data_ptr() in seen:
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        fresh.append(t)
    return tuple(fresh)


@on_input_device
def _dwconv_hadamard_bwd_impl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gate: torch.Tensor | None,
    acc: torch.Tensor | None, acc_scale: torch.Tensor | None, scale: torch.Tensor | None,
    dz: torch.Tensor | None, do: torch.Tensor | None,
    height: int, width: int, pad_h: int, pad_w: int, in_bias: torch.Tensor | None = None,
    u: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """(dx, dg, da, dw, db, ds, dsa, dbi); a gradient of an absent input is an empty tensor.

    Direct form: one dwconv_hadamard_bwd_kernel recomputes u from the shifted loads that give
    dw. Toeplitz form (tensor cores): where dg or ds reads u = conv(x + bi) + b (a gate, or do
    and a scale), u as the forward stored it (keeps_u), else from the forward kernel (fp32);
    the elementwise part writes du channel-major, dwconv_toeplitz_wgrad_kernel gives dw. Both:
    dx is the forward kernel on du (in x's dtype) with flipped taps. Tensor cores take 16-bit
    operands: the Toeplitz form rounds du (for dw and dx) and the taps (for u, as its forward
    does) to x's dtype, so with 32-bit weights and 16-bit activations its dw and ds carry
    ~1e-4 relative error where the direct form's carry ~1e-7; with 16-bit weights both
    agree.

    Input bias (the conv of x + bi): the direct form adds it to x first; the Toeplitz form
    keeps x and adds bi * G to dw (wgrad saw x alone) with G[c, i, m] = sum of du[c] over the
    outputs whose tap (i, m) lands inside the grid, and dbi = sum_tokens dx = sum_{i, m}
    w[c, i, m] G[c, i, m] (each output's in-grid taps), so neither takes a pass over dx."""
    check_grid(height, width, x, gate, acc, dz, do)
    bias, acc_scale, scale, in_bias = channel_vectors(bias, acc_scale, scale, in_bias)
    if not _use_triton(x):
        return naive_dwconv_hadamard_bwd(x, weight, bias, gate, acc, acc_scale, scale, dz, do,
                                         height, width, pad_h, pad_w, in_bias)
    b, n, c = x.shape
    kh, kw = weight.shape[1], weight.shape[2]
    tensor_cores = (tensor_core_form(x, c, height, kh, kw)
                    and not index_widths(x, gate, acc, dz, do)["WIDE"])
    if in_bias is not None and not tensor_cores:  # in x's dtype, as dx must be
        x = x + in_bias.to(x.dtype)

    # the direct form's tap loop loads 16-byte channel vectors from a token-major x (fewer
    # instructions than from a channel-major one: benchmarks/results/triton_aot.md)
    x = x if tensor_cores else channel_rows(x)
    gate, acc = channel_rows(gate), channel_rows(acc)
    dz = None if dz is None else dz.contiguous()
    do = None if do is None else do.contiguous()
    weight = weight.contiguous()
    empty = lambda: x.new_empty(0)  # noqa: E731 - a fresh one each: outputs may not alias
    dg = empty() if gate is None else torch.empty(x.shape, dtype=gate.dtype, device=x.device)
    da = empty() if (acc is None or do is None) else torch.empty(x.shape, dtype=acc.dtype,
                                                               device=x.device)
    cfg = dwconv_hadamard_config(n, c, x.is_cuda, backward=True)
    grid = (b * cdiv(n, cfg["BT"]), cdiv(c, cfg["BC"]))  # each image's token tiles on axis 0
    # deterministic algorithms: the kernels sum into rows of partial sums, one a program, and
    # torch adds the rows in a fixed order; otherwise fp32 atomic adds (run-to-run order)
    partial = torch.are_deterministic_algorithms_enabled()
    f32 = dict(dtype=torch.float32, device=x.device)
    sums = lambda: torch.zeros((grid[0], c) if partial else c, **f32)  # noqa: E731
    dw = torch.zeros((c, kh, kw), **f32)
    db = sums() if bias is not None else empty()
    ds = sums() if scale is not None and do is not None else empty()
    dsa = sums() if acc_scale is not None and do is not None else empty()
    uses_u = gate is not None or (do is not None and scale is not None)  # for dg or ds
    if tensor_cores:
        if not uses_u:
            u = x  # never read: no conv is recomputed for it
        elif u is None or not u.numel():
            u = torch.empty((b, n, c), **f32)
            dwconv_hadamard_launch(x, weight, bias, None, None, None, None, height, width,
                                   pad_h, pad_w, u, None, in_bias)
        du = torch.empty((b, c, n), dtype=x.dtype, device=x.device).mT  # channel-major
    else:  # u recomputed in the kernel; du in fp32 where torch's conv2d_weight takes it for
        # dw (partial), as the kernel's own dw reads it unrounded
        u, du = x, torch.empty(x.shape, dtype=torch.float32 if partial else x.dtype,
                               device=x.device)
    pick = lambda t: x if t is None or t.numel() == 0 else t  # noqa: E731 - never-read slots
    start(dwconv_hadamard_bwd_kernel, grid)(
        x, weight, pick(bias), pick(gate), pick(acc), pick(acc_scale), pick(scale), pick(dz),
        pick(do), u, du, pick(dg), pick(da), dw, pick(db), pick(ds), pick(dsa),
        x.stride(0), x.stride(1), x.stride(2),
        0 if gate is None else gate.stride(0), 0 if gate is None else gate.stride(1),
        0 if acc is None else acc.stride(0), 0 if acc is None else acc.stride(1),
        du.stride(0), du.stride(1), du.stride(2),
        n, c, height, width,
        KH=kh, KW=kw, PH=pad_h, PW=pad_w,
        HAS_BIAS=bias is not None, HAS_GATE=gate is not None, HAS_ACC=acc is not None,
        HAS_ACC_SCALE=acc_scale is not None, HAS_SCALE=scale is not None,
        HAS_DZ=dz is not None, HAS_DO=do is not None, RECOMPUTE=not tensor_cores,
        USES_U=uses_u, **index_widths(x, gate, acc, dz, do, u, du, dg, da),
        BT=cfg["BT"], BC=cfg["BC"], num_warps=cfg["num_warps"], PARTIAL=partial,
    )
    if partial:
        db, ds, dsa = (t.sum(0) if t.numel() else t for t in (db, ds, dsa))
    if tensor_cores:
        TENSOR_CORES.wgrad(x, du, dw, height, width, pad_h, pad_w, partial)
    elif partial:  # torch's conv2d_weight, under torch's own deterministic rules
        dw += _depthwise_weight_grad(x.float(), du, kh, kw, height, width, pad_h, pad_w)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    # du rounded to x's dtype as the atomic mode stores it: dx does not depend on the mode
    dwconv_hadamard_launch(du.to(x.dtype), weight.flip(1, 2), None, None, None, None, None,
                           height, width, kh - 1 - pad_h, kw - 1 - pad_w, dx, None)
    dbi = empty()
    if in_bias is not None and tensor_cores:
        dw_in_bias, dbi = TENSOR_CORES.in_bias_grads(du, weight, in_bias, height, width, pad_h,
                                                     pad_w)
        dw += dw_in_bias
    elif in_bias is not None:
        dbi = dx.sum((0, 1), dtype=torch.float32)

    def cast(t, like):
        return t if like is None or t.numel() == 0 else t.to(like.dtype)

    return (dx, dg, da, dw.to(weight.dtype), cast(db, bias), cast(ds, scale),
            cast(dsa, acc_scale), cast(dbi, in_bias))


def present(operand: torch.Tensor | None, grad: torch.Tensor) -> torch.Tensor | None:
    """grad where `operand` was given and its gradient made, else None. The op returns an
    empty tensor for a gradient it did not make (an absent operand, no incoming gradient),
    which only an empty operand's own gradient (an empty batch's) also is."""
    made = operand is not None and (grad.numel() > 0 or operand.numel() == 0)
    return grad if made else None


def _dwconv_hadamard_backward(ctx, dz, do, _):
    """Derived backward. Forward: u = conv(x + bi) + b, z = u * g, o = sa * a + s * z.

    One op (_dwconv_hadamard_bwd_impl) gives dx = conv(du) with flipped taps and mirrored
    padding (the adjoint of the depthwise map), dg, da and the reductions dw, db, ds, dsa, and
    dbi (the input bias's); it reads u where the forward kept it (the op's third output: no
    gradient flows into it).
    """
    x, weight, bias, gate, acc, acc_scale, scale, in_bias, u = ctx.saved_tensors
    height, width, pad_h, pad_w, store_z, store_o = ctx.geometry
    some = lambda t: t if t.numel() else None  # noqa: E731 - empty marks an absent tensor
    bwd = (_dwconv_hadamard_bwd_impl if getattr(ctx, "eager", False)
           else getattr(torch.ops, DWCONV_OPS).dwconv_hadamard_bwd)
    d_x, dg, da, dw, db, ds, dsa, dbi = bwd(
        x, weight, bias, gate, acc, acc_scale, scale, dz if store_z else None,
        do if store_o else None, height, width, pad_h, pad_w, in_bias, some(u))
    # each present operand's gradient (an empty batch's are empty or zero, not absent)
    return (d_x.to(x.dtype), dw, present(bias, db), present(gate, dg), present(acc, da),
            present(acc_scale, dsa), present(scale, ds), None, None, None, None, None, None,
            present(in_bias, dbi), None)


def _register_dwconv_hadamard():
    """torch.library custom op (+ fake kernel + autograd), defined once per process and
    namespace (modules generated from the same source share it)."""
    try:
        ops = getattr(torch.ops, DWCONV_OPS)
        ops.dwconv_hadamard_bwd  # noqa: B018 - registered with the forward
        return ops.dwconv_hadamard_fwd
    except AttributeError:
        pass
    op = torch.library.custom_op(f"{DWCONV_OPS}::dwconv_hadamard_fwd", mutates_args=())(
        _dwconv_hadamard_impl)

    @op.register_fake
    def _(x, weight, bias, gate, acc, acc_scale, scale, height, width, pad_h, pad_w, store_z,
          store_o, in_bias=None, keep_u=False):
        return forward_outputs(x, weight, gate, scale, height, store_z, store_o, keep_u)

    bwd = torch.library.custom_op(f"{DWCONV_OPS}::dwconv_hadamard_bwd", mutates_args=())(
        _dwconv_hadamard_bwd_impl)

    @bwd.register_fake
    def _(x, weight, bias, gate, acc, acc_scale, scale, dz, do, height, width, pad_h, pad_w,
          in_bias=None, u=None):
        def like(t, ref, shape):
            return x.new_empty(0) if t is None else ref.new_empty(shape, dtype=t.dtype)

        c = x.shape[-1]
        return (x.new_empty(x.shape), like(gate, x, x.shape),
                like(acc if do is not None else None, x, x.shape), weight.new_empty(weight.shape),
                like(bias, x, (c,)), like(scale if do is not None else None, x, (c,)),
                like(acc_scale if do is not None else None, x, (c,)), like(in_bias, x, (c,)))

    op.register_autograd(_dwconv_hadamard_backward, setup_context=_dwconv_hadamard_setup)
    return getattr(torch.ops, DWCONV_OPS).dwconv_hadamard_fwd


# (z, o): the op's u stays with autograd
dwconv_hadamard = custom_op_caller(_register_dwconv_hadamard(), _dwconv_hadamard_impl,
                                   _dwconv_hadamard_setup, _dwconv_hadamard_backward,
                                   grad_flag="keep_u", outputs=2)
'''

# a module whose convs are all 1-D: the direct form alone, in place of toeplitz.py's text
DIRECT_ONLY = '''
# every conv of this module is 1-D, which the direct form serves: the tensor-core form
# (banded Toeplitz products, for 2-D maps) is not carried
TENSOR_CORES = None
'''

# tl.dot tiles per kernel, for the static GPU-legality check: the direct kernels have none
# (toeplitz.py's DOT_TILES hold the tensor-core form's)
DOT_TILES: dict[str, list] = {}
