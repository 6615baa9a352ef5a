"""The generated kernels compiled for sm_90 by Triton's real pipeline (ptxas included) on the
CPU: the GPU launch configurations compile quickly and keep every value in registers."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from padre_compiler.backends.triton import aot
from padre_compiler.cli import codegen_path

pytestmark = pytest.mark.skipif(not aot.available(),
                                reason="Triton's NVIDIA backend (cuobjdump) is not installed")
FLAGS = dict(HAS_BIAS=True, HAS_GATE=True, HAS_ACC=True, HAS_ACC_SCALE=True, HAS_SCALE=True)
GRADS = {k: "fp32" for k in ("dw", "db", "ds", "dsa")}
# the Toeplitz forward's flags a launcher's tiles may leave out: off unless a test sets them
TOEPLITZ = {"HAS_IN_BIAS": False, "KP": 16, "BAND_FROM_TAPS": False, "SLAB": False, "PARTS": 1,
            "STORE_U": False}


PATH = codegen_path("padre3", "triton")


@pytest.fixture(scope="module")
def padre3():
    """The generated module (for its launch-configuration functions)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("aot_padre3", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _taps(k: int) -> dict[str, int]:
    return dict(KH=k, KW=k, PH=k // 2, PW=k // 2)


@pytest.mark.parametrize("kernel", ["dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel"])
def test_direct_kernels_at_gpu_tiles_do_not_spill(padre3, kernel: str) -> None:
    backward = kernel == "dwconv_hadamard_bwd_kernel"
    cfg = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=backward)
    extra = (dict(HAS_DZ=True, HAS_DO=True, RECOMPUTE=True, USES_U=True) if backward
             else dict(STORE_Z=True, STORE_O=True))
    r = aot.compile_kernel(PATH, kernel,
                           dict(FLAGS, **_taps(11), **extra, **aot.constexprs_of(cfg)),
                           num_warps=cfg["num_warps"], pointer_dtypes=GRADS)
    assert r.stack == 0, f"{kernel} spills {r.stack} bytes per thread at {cfg}"
    assert r.registers <= 255 and r.seconds < 30
    assert r.mma == "none"  # shifted loads and FMAs on CUDA cores


@pytest.mark.parametrize(("taps", "height", "pick"),
                         [(11, 56, i) for i in range(18)] + [(31, 80, i) for i in range(4)])
def test_toeplitz_kernel_at_gpu_tiles_does_not_spill(padre3, taps: int, height: int,
                                                     pick: int) -> None:
    """As a GPU forward launches it (channel-major input, token stride 1, aligned strips), at
    the default tiles and at every candidate the first launch times (the L1, band and slab
    variants at 11 taps: the same tiles; no slab past 17 taps)."""
    configs = padre3.dwconv_toeplitz_configs(384, taps, gpu=True, rows=height,
                                             pad_w=taps // 2, align=8)
    assert len(configs) == (18 if taps == 11 else 10)
    cfg = configs[pick]
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "s_xn": 1, **_taps(taps),
              **aot.constexprs_of(cfg)}
    r = aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", consts,
                           num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                           trips=(taps,))
    assert r.stack == 0, f"toeplitz spills {r.stack} bytes per thread at {cfg}"
    assert r.shared <= 227 * 1024
    assert r.mma != "none"  # the banded products run on tensor cores
    census = r.census
    copies = census.counts.get("global->shared copy", 0)
    if cfg.get("SLAB"):  # 16-byte loads: the slab once (not per row tap), and the gate's and
        # the accumulator's [BC]-channel rows where BC 16-bit channels fill 16 bytes
        slab = 2 * cfg["BH"] * cfg["BK"]
        epilogue = 2 * cfg["BH"] * cfg["BW"] if cfg["BC"] >= 8 else 0
        assert census.widths[16] == cfg["BC"] * (slab + epilogue) // 8 // 32
        assert (copies > 0) != bool(cfg.get("BAND_FROM_TAPS"))  # the band's, if read
        return
    if cfg["num_stages"] == 1:  # no pipeline: plain 16-byte loads (L1-cached), no copies
        strip, band = census.widths.get(16, 0), census.widths.get(2, 0)
        # (a band gathered from the taps: 2-byte loads of L1-resident taps)
        assert copies == 0 and strip > 0 and (cfg.get("BAND_FROM_TAPS") or strip > band)
        return
    # the strip (and the band) go to shared memory by asynchronous 16-byte copies, not through
    # registers and scalar shared stores
    assert copies > 0
    strip_in_l1 = cfg["STRIP_CACHE"] == ".ca"
    if cfg.get("BAND_FROM_TAPS"):  # only the strip is copied; the taps are gathered
        assert census.l1_copies == (copies if strip_in_l1 else 0)
        return
    assert census.counts.get("shared store", 0) < copies
    if strip_in_l1:  # the strip's copies allocate in L1, the band's do not
        assert 0 < census.l1_copies < copies
    else:
        assert census.l1_copies == 0


@pytest.mark.parametrize("pick", [0, 12])  # the default tiles; the slab at 2 stages
def test_toeplitz_forward_keeping_u_does_not_spill(padre3, pick: int) -> None:
    """A gated conv's forward under autograd (STORE_U: u stored in float32 beside z and o)."""
    cfg = padre3.dwconv_toeplitz_configs(384, 11, gpu=True, rows=56, pad_w=5, align=8)[pick]
    assert bool(cfg["SLAB"]) == (pick == 12) and cfg["num_stages"] == (2 if pick else 3)
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "STORE_U": True,
              "s_xn": 1, **_taps(11), **aot.constexprs_of(cfg)}
    r = aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", consts,
                           num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                           pointer_dtypes={"u": "fp32"})
    assert r.stack == 0, f"the forward keeping u spills {r.stack} bytes per thread at {cfg}"


@pytest.mark.parametrize("in_bias", [False, True])
@pytest.mark.parametrize(("pick", "tile"), [(1, (8, 64, 4)), (4, (16, 64, 8))])
def test_tiles_within_the_per_tile_limit_can_spill_together(padre3, pick: int, tile: tuple,
                                                            in_bias: bool) -> None:
    """A limit of legality.py, which checks each register tile on its own: the 17-tap
    forward's (BC, BH, num_warps) = (8, 64, 4) and (16, 64, 8) alternatives hold no tile over
    128 registers per thread with or without the input bias folded (their [BC, BH, KP] tile,
    KP = 32, is 128), and spill with it, outside the loops (the epilogue's input-bias
    products), for sm_90."""
    from padre_compiler.backends.triton import tile_shapes

    cfg = padre3.dwconv_toeplitz_configs(384, 17, gpu=True, rows=80, pad_w=8, align=8)[pick]
    assert (cfg["BC"], cfg["BH"], cfg["num_warps"]) == tile and cfg["BW"] == 16
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "s_xn": 1, **_taps(17),
              **aot.constexprs_of(cfg), "HAS_IN_BIAS": in_bias,
              "KP": padre3.in_bias_tile(17, 17)}
    tiles, unsized = tile_shapes.register_tiles(PATH.read_text(),
                                                "dwconv_toeplitz_fwd_kernel", consts)
    assert not unsized and max(t.per_thread(cfg["num_warps"]) for t in tiles) == 128
    r = aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", consts,
                           num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    assert (r.stack > 0) == in_bias, r
    assert not in_bias or r.spills[1] == 0, r.spills


@pytest.mark.parametrize("slab", [False, True])
def test_fp32_toeplitz_products_are_ieee_not_tf32(padre3, slab: bool) -> None:
    """A forced Toeplitz form on fp32 inputs keeps fp32 products (IEEE, CUDA cores), as the
    interpreter computes them; TF32 would round x to 10 mantissa bits on a GPU alone. 16-bit
    inputs stay on tensor cores."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": False, "s_xn": 1, **_taps(11),
              **aot.constexprs_of(cfg), "SLAB": slab}
    for dtype, mma in (("fp32", "none"), ("bf16", "mma.sync")):
        fwd = aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", consts, num_stages=2,
                                 num_warps=cfg["num_warps"], pointer_dtype=dtype)
        wgrad = aot.compile_kernel(PATH, "dwconv_toeplitz_wgrad_kernel",
                                   {**_taps(11), "BD": 16, "s_xn": 1, "s_dun": 1,
                                    **aot.constexprs_of(cfg), "SLAB": slab},
                                   num_warps=cfg["num_warps"], num_stages=2,
                                   pointer_dtype=dtype, pointer_dtypes={"dw": "fp32"})
        assert (fwd.mma, wgrad.mma) == (mma, mma), dtype


def test_int64_batch_offsets_compile_without_spills(padre3) -> None:
    """I64 (an offset reaches 2**31): the Toeplitz forward and the backward's elementwise
    kernel compile for sm_90 with 64-bit batch offsets, still in registers."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "s_xn": 1, **_taps(11),
              **aot.constexprs_of(cfg)}
    narrow, wide = (aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", dict(consts, I64=i),
                                       num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
                    for i in (False, True))
    assert wide.stack == 0 and wide.ptx_lines != narrow.ptx_lines
    bwd = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=True)
    given = aot.compile_kernel(PATH, "dwconv_hadamard_bwd_kernel",
                               dict(FLAGS, HAS_DZ=True, HAS_DO=True, RECOMPUTE=False,
                                    USES_U=True, s_dun=1, I64=True, **_taps(11),
                                    **aot.constexprs_of(bwd)),
                               num_warps=bwd["num_warps"], pointer_dtypes=dict(GRADS, u="fp32"))
    assert given.stack == 0


@pytest.mark.parametrize("partial", [False, True], ids=["atomic", "partial"])
def test_deterministic_backward_kernels_issue_no_atomics(padre3, partial: bool) -> None:
    """PARTIAL (deterministic algorithms): the backward's elementwise kernel, in both forms,
    and the weight gradient compile for sm_90 without a global atomic and without spills;
    their default launches sum with atomics (RED)."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    wgrad = aot.compile_kernel(PATH, "dwconv_toeplitz_wgrad_kernel",
                               dict(_taps(11), BD=16, s_xn=1, s_dun=1, PARTIAL=partial,
                                    **aot.constexprs_of(cfg)),
                               num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                               pointer_dtypes={"dw": "fp32"}, trips=(1, 11))
    bwd = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=True)
    elementwise = [aot.compile_kernel(PATH, "dwconv_hadamard_bwd_kernel",
                                      dict(FLAGS, HAS_DZ=True, HAS_DO=True, RECOMPUTE=recompute,
                                           USES_U=True, PARTIAL=partial, **_taps(11),
                                           **aot.constexprs_of(bwd)),
                                      num_warps=bwd["num_warps"],
                                      pointer_dtypes=dict(GRADS, u="fp32"),
                                      trips=(11, 11) if recompute else ())
                   for recompute in (False, True)]
    for r in (wgrad, *elementwise):
        assert r.stack == 0
        assert (r.census.counts.get("global atomic", 0) == 0) == partial


@pytest.mark.parametrize("kernel", ["dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel"])
def test_wide_images_compile_int64_token_offsets_without_spills(padre3, kernel: str) -> None:
    """WIDE (an image spans 2**31 elements): the direct kernels compile for sm_90 with token
    offsets in int64 (other code than I64 alone), still in registers."""
    backward = kernel == "dwconv_hadamard_bwd_kernel"
    cfg = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=backward)
    extra = (dict(HAS_DZ=True, HAS_DO=True, RECOMPUTE=True, USES_U=True) if backward
             else dict(STORE_Z=True, STORE_O=True))
    narrow, wide = (aot.compile_kernel(PATH, kernel, dict(FLAGS, **_taps(3), **extra, I64=True,
                                                          WIDE=w, **aot.constexprs_of(cfg)),
                                       num_warps=cfg["num_warps"], pointer_dtypes=GRADS)
                    for w in (False, True))
    assert wide.stack == 0 and wide.ptx_lines != narrow.ptx_lines


def test_tensor_core_backward_kernels_at_gpu_tiles(padre3) -> None:
    """The Toeplitz path's backward as a GPU launches it: the weight gradient on tensor cores
    without spills, and the elementwise kernel (u given) free of the tap loop."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    wgrad = aot.compile_kernel(PATH, "dwconv_toeplitz_wgrad_kernel",
                               dict(_taps(11), BD=16, s_xn=1, s_dun=1, **aot.constexprs_of(cfg)),
                               num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                               pointer_dtypes={"dw": "fp32"}, trips=(1, 11))
    assert wgrad.stack == 0 and wgrad.mma != "none"
    assert wgrad.census.loops == [1, 2]  # row tiles outside, the taps inside
    bwd = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=True)
    consts = dict(FLAGS, HAS_DZ=True, HAS_DO=True, RECOMPUTE=False, USES_U=True, s_dun=1,
                  **_taps(11), **aot.constexprs_of(bwd))
    given = aot.compile_kernel(PATH, "dwconv_hadamard_bwd_kernel", consts,
                               num_warps=bwd["num_warps"],
                               pointer_dtypes=dict(GRADS, u="fp32"), trips=())
    assert given.stack == 0 and given.census.loops == []  # no tap loop: u is read
    assert given.census.counts.get("fp32 fma", 0) < 0.5 * given.census.total


@pytest.mark.parametrize("pick", range(7))
def test_weight_gradient_candidates_do_not_spill(padre3, pick: int) -> None:
    """Every tile the weight gradient's first launch times compiles for sm_90 without spills
    and on tensor cores; one stage reads its strips with plain 16-byte loads, no copies, and
    the slab reads each row tile's once (16-byte loads: the slab's [BC, 2 BH, BK] per row
    tile, not per row tap, and du's [BC, BH, BW])."""
    configs = padre3.wgrad_configs(384, 11, 11, True, 8, 56, 5, 8)[0]  # padre3's, 8 x 56 x 56
    assert len(configs) == 7
    cfg = configs[pick]
    r = aot.compile_kernel(PATH, "dwconv_toeplitz_wgrad_kernel",
                           dict(_taps(11), BD=16, s_xn=1, s_dun=1, **aot.constexprs_of(cfg)),
                           num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                           pointer_dtypes={"dw": "fp32"}, trips=(1, 11))
    assert r.stack == 0 and r.mma != "none", cfg
    copies = r.census.counts.get("global->shared copy", 0)
    if cfg["num_stages"] == 1:
        assert copies == 0 and r.census.widths.get(16, 0) > 0
    elif cfg["SLAB"]:
        tile = cfg["BC"] * (2 * cfg["BH"] * cfg["BK"] + cfg["BH"] * cfg["BW"]) // 8 // 32
        assert copies == 0 and r.census.widths[16] == tile  # one row tile at 56 rows
    else:
        assert copies > 0


def _toeplitz_census(padre3, align: int, **flags) -> aot.Census:
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=align)
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "s_xn": 1, **_taps(11),
              **aot.constexprs_of(cfg), **flags}
    return aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", consts,
                              num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                              trips=(11,)).census


def test_aligned_strips_are_what_keep_the_strip_loads_vectors(padre3) -> None:
    """ALIGN = 1 (a width 8 does not divide): the column mask varies within 8-column groups,
    so the strip loads fall back to 2-byte ones through registers (the check can fail)."""
    aligned, unaligned = _toeplitz_census(padre3, 8), _toeplitz_census(padre3, 1)
    outputs = 8 * 64 * 16
    assert aligned.total < 0.6 * unaligned.total, (aligned.per(outputs), unaligned.per(outputs))
    assert unaligned.widths.get(2, 0) > unaligned.widths.get(16, 0)


def test_four_aligned_strips_keep_vector_copies(padre3) -> None:
    """ALIGN = 4 (padre3 at 28 x 28): 8-byte asynchronous copies, not 2-byte loads through
    registers; the census sits between the 8-aligned and the unaligned kernel's."""
    eight, four, one = (_toeplitz_census(padre3, a) for a in (8, 4, 1))
    assert eight.total < four.total < 0.6 * one.total
    assert four.widths.get(2, 0) < 0.1 * one.widths.get(2, 0)
    assert four.counts.get("global->shared copy", 0) > eight.counts.get("global->shared copy", 0)


def test_a_spilling_tile_is_reported(padre3) -> None:
    """The check can fail: a [128, 128] tile on 4 warps does not fit in registers."""
    consts = dict(FLAGS, STORE_Z=True, STORE_O=True, **_taps(11), BT=128, BC=128)
    r = aot.compile_kernel(PATH, "dwconv_hadamard_fwd_kernel", consts, num_warps=4)
    assert r.stack > 0
    assert r.spills[1] > 0, r.spills  # reloads inside the tap loops: the costly kind


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("norm", [None, "A_NORM", "VJP", "WIDE", "OUT_NORM", "OUT_VJP", "L1"])
def test_linear_attention_kernels_at_gpu_tiles_do_not_spill(bf16: bool, norm: str | None) -> None:
    """SimA's and Castling-ViT's kernels at D = 384, 8 heads (e = 48), 3,136 tokens: plain,
    with rows l2-normalised in the kernel (A_NORM), with the normalisation's vector-Jacobian
    product (VJP, head_apply only), with token offsets in int64 (WIDE, with I64), and with
    Castling-ViT's output epilogue (head_apply only: OUT_NORM, forward, and OUT_VJP, its
    backward launch, both with q normalised, the scaled res and, forward, the post term), and
    SimA's l1 norms (L1: the state's norms, A_L1; the backward's signed term, RES_SGN, with
    per-batch fp32 scales)."""
    path = codegen_path("castling_vit", "triton")
    cfg = {"BE": 64, "BT": 64, "CHUNK": 1024, "num_warps": 8}  # head_config(3136, 48, True)
    dtype = "bf16" if bf16 else "fp32"
    flags = {} if norm is None else {norm: True, "I64": norm == "WIDE"}
    if norm in ("OUT_NORM", "OUT_VJP"):
        flags = dict(A_NORM=True, RES=True, RES_SCALE=True, OUT_NORM=True,
                     OUT_VJP=norm == "OUT_VJP", POST=norm == "OUT_NORM")
    if norm == "L1":
        flags = dict(RES=True, RES_SCALE=True, RES_SGN=True)
    state = aot.compile_kernel(path, "head_state_kernel",
                               dict(E=48, IEEE=not bf16, CHUNK=cfg["CHUNK"], BT=cfg["BT"],
                                    BE=cfg["BE"], A_NORM=norm == "A_NORM", WIDE=norm == "WIDE",
                                    I64=norm == "WIDE", A_L1=norm == "L1"),
                               num_warps=cfg["num_warps"], pointer_dtype=dtype,
                               pointer_dtypes={"p": "fp32", "pn": "fp32"})
    apply = aot.compile_kernel(path, "head_apply_kernel",  # fp32: head_config's 32 tokens
                               dict(E=48, TRANS=False, F32=not bf16, BT=64 if bf16 else 32,
                                    BE=cfg["BE"], **flags),
                               num_warps=cfg["num_warps"], pointer_dtype=dtype,
                               pointer_dtypes={"s": "fp32", "d": "fp32" if norm == "L1" else dtype})
    assert state.stack == 0 and apply.stack == 0, (state, apply)
    if bf16:  # Hopper's warpgroup MMA for the 16-bit products
        assert state.mma == apply.mma == "wgmma", (state.mma, apply.mma)


@pytest.mark.parametrize("flags", [dict(RES_SCALE=True), dict(RES_SGN=True),
                                   dict(OUT_VJP=True), dict(POST=True),
                                   dict(VJP=True, A_NORM=True),
                                   dict(VJP=True, OUT_NORM=True, POST=True)])
def test_head_apply_refuses_flags_that_do_not_combine(flags: dict) -> None:
    """head_apply_kernel's flags state their preconditions (tl.static_assert): a modifier
    without what it modifies, or two roles for x or eps, fails to compile, where the kernel
    would ignore one of them."""
    with pytest.raises(Exception, match=r"RES_SCALE and RES_SGN|POST is added|x is one of"):
        aot.compile_kernel(codegen_path("sima", "triton"), "head_apply_kernel",
                           dict(E=48, TRANS=False, F32=True, BT=32, BE=64, **flags),
                           num_warps=8, pointer_dtype="fp32", pointer_dtypes={"s": "fp32"})


def test_a_64_token_cuda_core_apply_with_the_epilogue_spills() -> None:
    """Why head_config gives fp32 products 32-token tiles: at 64 tokens (8 warps) the output
    epilogue's head_apply spills for sm_90, where the 32-token tile above does not."""
    flags = dict(A_NORM=True, RES=True, RES_SCALE=True, OUT_NORM=True, POST=True)
    r = aot.compile_kernel(codegen_path("castling_vit", "triton"), "head_apply_kernel",
                           dict(E=48, TRANS=False, F32=True, BT=64, BE=64, **flags),
                           num_warps=8, pointer_dtype="fp32", pointer_dtypes={"s": "fp32"})
    assert r.stack > 0, r


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0008*/                   STL [R1], R4 ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/               @P0 FFMA R8, R4, R5, R8 ;
        /*0030*/              @!P1 LDG.E.U16 R9, desc[UR4][R2.64+0x2] ;
        /*0040*/                   HMMA.16816.F32.BF16 R12, R4, R6, R12 ;
        /*0048*/                   LDGSTS.E.BYPASS.128 [R20], desc[UR4][R2.64] ;
        /*004c*/                   LDGSTS.E.128 [R20+0x800], desc[UR4][R2.64+0x40] ;
        /*004e*/                   LDGDEPBAR ;
        /*0050*/                   ISETP.NE.AND P1, PT, R0, 0xb, PT ;
        /*0058*/                   LDL.LU R54, [R1] ;
        /*0060*/               @P1 BRA 0x30 ;
        /*0070*/               @P2 BRA 0x20 ;
        /*0080*/                   STG.E.128 desc[UR4][R2.64], R8 ;
        /*0088*/                   LDL R4, [R1] ;
        /*0090*/                   EXIT ;
"""


def test_census_weights_loop_bodies_by_their_trip_counts() -> None:
    """Outer loop 0x20..0x70 (3 trips) holds the inner 0x30..0x60 (5 trips); 2 warps."""
    c = aot.census_of(SASS, (3, 5), num_warps=2)
    assert c.loops == [1, 2]
    assert c.counts["global load"] == 2 * (1 + 3 * 5)  # the 16-byte load runs once
    assert c.counts["fp32 fma"] == 2 * 3
    assert c.counts["tensor core"] == 2 * 3 * 5
    assert c.counts["global store"] == 2
    assert c.widths == {16: 2, 2: 2 * 15}  # LDGDEPBAR (a copy barrier) is no load
    assert c.counts["global->shared copy"] == 2 * 2 * 15 and c.l1_copies == 2 * 15
    assert c.counts["local store"] == 2 and c.counts["local load"] == 2 * (1 + 3 * 5)
    assert aot.spills_of(SASS) == (2, 1)  # a store and a reload around the loops, one in them
    assert c.per(4)["total"] == c.total / 4
    with pytest.raises(ValueError, match="2 deep"):
        aot.census_of(SASS, (3,), num_warps=2)


@pytest.mark.parametrize(("registers", "shared", "warps", "want"), [
    (78, 40 * 1024, 8, 3),  # registers: 8 warps x 10 x 256 = 20,480 of 65,536
    (190, 104 * 1024, 8, 1),  # registers: 48 x 256 per warp, 49,152 a program
    (40, 100 * 1024, 4, 2),  # shared memory: 2 x (100 + 1) KiB of 228
    (32, 0, 32, 2),  # warps: 64 an SM
])
def test_programs_per_sm_is_the_tightest_limit(registers, shared, warps, want) -> None:
    r = aot.Resources("k", {"num_warps": warps}, 0.0, 0, registers, 0, shared, "none", "t")
    assert r.programs_per_sm() == want


def test_direct_kernel_census_counts_one_fma_per_tap_and_output(padre3) -> None:
    """121 taps x (BT x BC) outputs / 32 lanes warp FMAs, within the epilogue's few."""
    cfg = padre3.dwconv_hadamard_config(3136, 384, gpu=True)
    consts = dict(FLAGS, STORE_Z=True, STORE_O=True, **_taps(11), **aot.constexprs_of(cfg))
    r = aot.compile_kernel(PATH, "dwconv_hadamard_fwd_kernel", consts,
                           num_warps=cfg["num_warps"], trips=(11, 11))
    per = r.census.per(cfg["BT"] * cfg["BC"])
    assert r.census.loops == [1, 2]
    assert 121 / 32 <= per["fp32 fma"] <= 1.02 * 121 / 32, per


def test_alignment_hints_are_what_widen_the_channel_loads(padre3) -> None:
    """Compiled as the JIT compiles an aligned launch, channel runs load 16 bytes at a time;
    without the divisibility hints every load is a 2-byte one (the check can tell them apart)."""
    cfg = padre3.dwconv_hadamard_config(3136, 384, gpu=True)
    consts = dict(FLAGS, STORE_Z=True, STORE_O=True, **_taps(11), **aot.constexprs_of(cfg))
    widths = {aligned: aot.compile_kernel(PATH, "dwconv_hadamard_fwd_kernel", consts,
                                          num_warps=cfg["num_warps"], aligned=aligned,
                                          trips=(11, 11)).census.widths
              for aligned in (True, False)}
    assert 16 in widths[True]
    assert set(widths[False]) == {2}


def _outputs_per_program(padre3, cfg: dict, b: int, h: int, w: int, c: int) -> float:
    """Outputs of a [b, h * w, c] conv per program of the Toeplitz forward's grid: the ones
    it stores, not the padding of its tiles."""
    return b * h * w * c / math.prod(padre3.toeplitz_grid(cfg, b, h, w, c))


def test_tensor_core_kernels_stay_within_their_instruction_budgets(padre3) -> None:
    """Regression guard on the SASS census at padre3's GPU launch (benchmarks/triton_aot.md):
    Toeplitz forward 2.49 warp instructions per stored output of 8 56 x 56 images (2.18 per
    tile element; 2.77 when each image's rows were tiled apart, padding 56 rows to 64) and
    weight gradient 3.10 per du element of those images (3.48 with each image's rows tiled
    apart) at the 3 stages they launch with (the weight gradient was 6.00 with the taps
    outside and a one-trip row loop pipelined inside); a change that brings back register
    transposes, per-lag reductions, a du load per tap or a padded row tile trips it."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=8 * 56, pad_w=5, align=8)
    fwd = _toeplitz_census(padre3, 8)
    wgrad = aot.compile_kernel(PATH, "dwconv_toeplitz_wgrad_kernel",
                               dict(_taps(11), BD=16, s_xn=1, s_dun=1, **aot.constexprs_of(cfg)),
                               num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                               pointer_dtypes={"dw": "fp32"}, trips=(1, 11)).census
    assert fwd.per(_outputs_per_program(padre3, cfg, 8, 56, 56, 384))["total"] < 2.6
    stored = 8 * 56 * 56 * 384 / math.prod(padre3.wgrad_grid(cfg, 8, 56, 56, 384)[0])
    assert wgrad.per(stored)["total"] < 3.3


def test_slab_in_two_column_parts_holds_two_programs_an_sm(padre3) -> None:
    """What PARTS is for: the whole strip's shift product keeps a [16, BC * BH / 16 * BK] fp32
    result live (190 registers a thread under Triton 3.9 at padre3's tile: 1 program an SM);
    in two column parts half of it (101: 2 programs), for the same 16-byte slab loads."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    consts = {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "s_xn": 1, **_taps(11),
              **aot.constexprs_of(cfg), "SLAB": True}
    whole, parts = (aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", dict(consts, PARTS=p),
                                       num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                                       trips=(11,)) for p in (1, 2))
    assert whole.programs_per_sm() == 1 and parts.programs_per_sm() >= 2, (whole.registers,
                                                                           parts.registers)
    assert parts.census.loops == [1, 1]  # a tap loop per part
    assert parts.census.widths[16] == whole.census.widths[16]


def test_folded_input_bias_costs_a_fraction_of_the_pass_it_replaces(padre3) -> None:
    """padre3's 3C-wide conv (conv bias, no gate or sum) with the dense map's bias folded in:
    conv(1) from four small tensor-core products adds under 0.4 warp instructions per output
    (1.64 -> 1.96 when written; the per-tap FMA loop it replaced added 1.44, 3xTF32 products
    0.69). It has to stay cheap: the torch pass it removes reads and writes every element."""
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    alone = dict(HAS_GATE=False, HAS_ACC=False, HAS_ACC_SCALE=False, HAS_SCALE=False,
                 STORE_O=False)
    plain = _toeplitz_census(padre3, 8, **alone)
    folded = _toeplitz_census(padre3, 8, **alone, HAS_IN_BIAS=True)
    outputs = cfg["BC"] * cfg["BH"] * cfg["BW"]
    extra = folded.per(outputs)["total"] - plain.per(outputs)["total"]
    assert 0 < extra < 0.4, (plain.per(outputs), folded.per(outputs))
    assert folded.counts["tensor core"] > plain.counts["tensor core"]  # the products, not FMAs


def test_a_fetched_triton_release_is_reused_and_compiles_in_the_child(tmp_path,
                                                                        monkeypatch) -> None:
    """triton_release finds a release already unpacked (no fetch); compile_kernel's child runs
    with that folder first on its import path (here a link to the installed Triton)."""
    import subprocess

    import triton

    root = tmp_path / "padre-compiler" / "triton-0.0.0"
    root.mkdir(parents=True)
    (root / "triton").symlink_to(Path(triton.__file__).parent)
    calls = []
    run = subprocess.run

    def spy(*args, **kwargs):
        calls.append(kwargs.get("env", {}).get("PYTHONPATH", ""))
        return run(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    assert aot.triton_release("0.0.0", cache=tmp_path) == root and not calls
    r = aot.compile_kernel(PATH, "dwconv_hadamard_fwd_kernel", dict(
        KH=3, KW=3, PH=1, PW=1, HAS_BIAS=False, HAS_GATE=False, HAS_ACC=False,
        HAS_ACC_SCALE=False, HAS_SCALE=False, STORE_Z=True, STORE_O=False, BT=16, BC=16),
        num_warps=1, triton_path=root)
    assert calls[0].split(os.pathsep)[0] == str(root)
    assert r.triton == triton.__version__ and r.registers > 0


@pytest.fixture(scope="module")
def first_launches() -> dict[str, dict]:
    """padre3's 3C conv first launch on its first 3 candidates through the JIT aimed at sm_90
    (aot.jit_for_sm, benchmarks/first_launch.py), compiled together and one after another."""
    from benchmarks.first_launch import run_child

    return {"together": run_child(True, candidates=3), "alone": run_child(False, candidates=3)}


def test_first_launch_compiles_every_candidate_together_on_a_pool(first_launches) -> None:
    """compile_together: each candidate of a first launch is compiled once, on the pool, before
    fastest's loop (which then compiles none), to the machine code it compiles to one after
    another (compile_together disabled: every compile in the main thread)."""
    together, alone = first_launches["together"], first_launches["alone"]
    assert together["candidates"] == together["kernels"] == 3
    assert (together["compiled_in_pool"], together["compiled_in_main_thread"]) == (3, 0)
    assert (alone["compiled_in_pool"], alone["compiled_in_main_thread"]) == (0, 3)
    assert together["digests"] == alone["digests"]


def test_the_census_compiles_what_the_jit_compiles(first_launches) -> None:
    """aot.compile_kernel's premise: it compiles a kernel as the JIT specialises a launch. The
    JIT's kernels for real tensors (a channel-major input, 56 x 56: an integer argument that 16
    does not divide) have the registers, spills, shared memory and SASS census per output that
    aot's compile of the same tiles and flags has."""
    from benchmarks.first_launch import disagreements

    assert disagreements(first_launches["together"]["jit"]) == []


def test_a_census_compiled_unlike_the_jit_is_reported(first_launches) -> None:
    """The check above can fail: aot compiling the default tiles without the JIT's constant
    stride (s_xn = 1 for a channel-major input) is named as differing from the JIT's kernel."""
    from benchmarks.first_launch import disagreements

    row = first_launches["together"]["jit"][0]
    constexprs = {k: v for k, v in row["constexprs"].items() if k != "s_xn"}
    (differs,) = disagreements([dict(row, constexprs=constexprs)])
    assert str(row["tiles"]) in differs


def test_every_launch_of_a_spec_compiles_for_sm_90(tmp_path) -> None:
    """benchmarks/launch_census.py: Conv2Former's and SimA's modules, forward and backward in
    bf16 and fp32 on the GPU's code path (default tiles), every launch compiled by Triton's JIT
    for sm_90 as it specialises the launch: all compile, none spills, and Conv2Former's
    Toeplitz conv reads 8-aligned channel-major strips (its input from dense_for_conv, not a
    token-major part of a fused map, which reads them one element at a time: ALIGN = 1). A
    PADRE_TRITON_CONV in the caller's environment does not change the form it compiles."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "launch_census.py"),
                           "--defaults-only", "--specs", "conv2former", "sima"],
                          env=dict(os.environ, OUT=str(tmp_path), PADRE_TRITON_CONV="direct"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "launch_census.json").read_text())["current codegen"]
    rows = result["rows"]
    assert not result["stopped"] and all("error" not in r and r["stack"] == 0 for r in rows)
    kernels = {r["kernel"] for r in rows}
    assert {"dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_wgrad_kernel",
            "dwconv_hadamard_bwd_kernel", "head_state_kernel", "head_apply_kernel"} <= kernels
    toeplitz = [r for r in rows if r["kernel"].startswith("dwconv_toeplitz")]
    assert all(r["constexprs"]["ALIGN"] == 8 for r in toeplitz), toeplitz
    assert (tmp_path / "launch_census.png").stat().st_size > 0


LAUNCH_CENSUS_GIVING_UP = """
import os, sys
sys.argv = ["launch_census.py"]
import benchmarks.launch_census as lc

load = lc.load_on_gpu_path


def failing_band(path, seen, where):  # a host-side failure on the tensor-core path
    m = load(path, seen, where)

    def band(*args, **kwargs):
        raise RuntimeError("no band")

    m.toeplitz_operand = band
    return m


lc.load_on_gpu_path = failing_band
os.environ.pop("TRITON_INTERPRET", None)
print(lc.run(lc.CODEGEN, ["conv2former"], defaults_only=True)["stopped"])
"""


def test_the_launch_census_reports_a_launcher_that_gave_up_the_tensor_core_form() -> None:
    """A launcher that falls back from the Toeplitz form to the direct one (a host-side
    failure: here its band operand) compiles only direct kernels and raises nothing; the
    census reports the run as stopped instead of passing it."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", LAUNCH_CENSUS_GIVING_UP], cwd=root,
                          env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "conv2former bfloat16" in proc.stdout and "no band" in proc.stdout, proc.stdout


def compiled_json(script: str, cache: Path) -> Any:
    """The JSON last line `script` prints, run from the checkout in a fresh interpreter that
    compiles for a GPU (no TRITON_INTERPRET) into the Triton cache `cache`."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=root,
                          env=dict(env, PYTHONPATH=str(root), TRITON_CACHE_DIR=str(cache)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


LAUNCH_CENSUS_KEY = """
import hashlib, json, os, sys
sys.argv = ["launch_census.py"]
import benchmarks.launch_census as lc

os.environ["PADRE_TRITON_TUNE"] = "0"
seen = []
for spec in ("hyena", "mamba_lti"):
    assert lc.census(lc.CODEGEN / f"{spec}.py", spec, "bfloat16", seen) is None
cubins = {}
for s in seen:
    if s["kernel"] == "long_conv_in_kernel":
        key = (json.dumps(s["constexprs"], sort_keys=True), s["spec"])
        cubins[key] = hashlib.sha256(s["compiled"].asm["cubin"]).hexdigest()
rows = [r for r in lc.rows_of(seen) if r["kernel"] == "long_conv_in_kernel"]
print(json.dumps({"cubins": sorted(cubins.items()), "uses": [r["uses"] for r in rows]}))
"""


def test_the_launch_census_keys_a_kernel_by_its_code_not_its_debug_lines(tmp_path) -> None:
    """Hyena's and Mamba-LTI's modules each hold long_conv_in_kernel, at different lines of
    differently named files, and launch it at the same configurations: the JIT compiles it
    for each (its cache key holds the first line), to cubins whose bytes differ (line info);
    the census counts one kernel per configuration, launched by both specs."""
    found = compiled_json(LAUNCH_CENSUS_KEY, tmp_path)
    by_config: dict[str, dict[str, str]] = {}
    for (config, spec), digest in found["cubins"]:
        by_config.setdefault(config, {})[spec] = digest
    assert by_config and all(d["hyena"] != d["mamba_lti"] for d in by_config.values())
    assert sorted(map(sorted, found["uses"])) == [["hyena bfloat16", "mamba_lti bfloat16"]] * len(
        by_config), found


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("i64", [False, True], ids=["int32", "int64"])
def test_long_conv_kernels_at_their_tile_do_not_spill(hyena, bf16: bool, i64: bool) -> None:
    """Hyena's long-convolution kernels at LONG_CONV_TILE with every optional operand (the
    backward's launches: both products in, both gated outputs and y out) and the backward's
    spectral batch sum at SPECTRAL_TILE, in int32 and int64
    offsets: they compile for sm_90, keep every value in registers (the transposing stores go
    through shared memory) and leave an SM room for 32 or more of their warps (memory-bound
    passes: latency is hidden by warps in flight)."""
    path, module = Path(hyena.__file__), hyena
    tile = module.LONG_CONV_TILE
    dtype = "bf16" if bf16 else "fp32"
    common = dict(BT=tile["BT"], BC=tile["BC"], I64=i64)
    fin = aot.compile_kernel(path, "long_conv_in_kernel", dict(B_IN=True, E_IN=True, **common),
                             num_warps=tile["num_warps"], pointer_dtype=dtype,
                             pointer_dtypes={"xp": "fp32"})
    fout = aot.compile_kernel(path, "long_conv_out_kernel",
                              dict(SKIP=True, G1=True, G2=True, STORE_S=True, **common),
                              num_warps=tile["num_warps"], pointer_dtype=dtype,
                              pointer_dtypes={"yp": "fp32", "xp": "fp32"})
    spectral = module.SPECTRAL_TILE
    corr = aot.compile_kernel(path, "spectral_correlation_kernel",
                              dict(BM=spectral["BM"], I64=i64),
                              num_warps=spectral["num_warps"], pointer_dtype="fp32")
    assert fin.stack == 0 and fout.stack == 0 and corr.stack == 0, (fin, fout, corr)
    warps = [r.programs_per_sm() * r.config["num_warps"] for r in (fin, fout, corr)]
    assert min(warps) >= 32, (fin, fout, corr)


@pytest.fixture(scope="module")
def hyena():
    """Hyena's generated module (the long convolution's tiles)."""
    spec = importlib.util.spec_from_file_location("aot_hyena", codegen_path("hyena", "triton"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folding_launches(padre3, hyena) -> dict[str, tuple[Path, dict, dict]]:
    """{kernel: (path, constexprs, options)} of every kernel whose grid has an axis 1 (channel
    blocks), at its default GPU tiles."""
    direct = padre3.dwconv_hadamard_config(3136, 384, gpu=True)
    bwd = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=True)
    cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    stages = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    tile = hyena.LONG_CONV_TILE
    long = dict(BT=tile["BT"], BC=tile["BC"])
    return {
        "dwconv_hadamard_fwd_kernel": (
            PATH, dict(FLAGS, **_taps(11), STORE_Z=True, STORE_O=True,
                       **aot.constexprs_of(direct)),
            dict(num_warps=direct["num_warps"], pointer_dtypes=GRADS)),
        "dwconv_hadamard_bwd_kernel": (
            PATH, dict(FLAGS, **_taps(11), HAS_DZ=True, HAS_DO=True, RECOMPUTE=True,
                       USES_U=True, **aot.constexprs_of(bwd)),
            dict(num_warps=bwd["num_warps"], pointer_dtypes=GRADS)),
        "dwconv_toeplitz_fwd_kernel": (
            PATH, {**FLAGS, **TOEPLITZ, "STORE_Z": True, "STORE_O": True, "s_xn": 1,
                   **_taps(11), **aot.constexprs_of(cfg)}, stages),
        "dwconv_toeplitz_wgrad_kernel": (
            PATH, dict(_taps(11), BD=16, s_xn=1, s_dun=1, **aot.constexprs_of(cfg)),
            dict(stages, pointer_dtypes={"dw": "fp32"})),
        "long_conv_in_kernel": (
            Path(hyena.__file__), dict(B_IN=True, E_IN=True, **long),
            dict(num_warps=tile["num_warps"], pointer_dtypes={"xp": "fp32"})),
        "long_conv_out_kernel": (
            Path(hyena.__file__), dict(SKIP=True, G1=True, G2=True, STORE_S=True, **long),
            dict(num_warps=tile["num_warps"], pointer_dtypes={"yp": "fp32", "xp": "fp32"})),
    }


@pytest.mark.parametrize("kernel", ["dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel",
                                    "dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_wgrad_kernel",
                                    "long_conv_in_kernel", "long_conv_out_kernel"])
def test_kernels_on_a_folded_channel_axis_compile_without_spills(padre3, hyena,
                                                                 kernel: str) -> None:
    """FOLD (axis 1 past 65,535 channel blocks, folded onto axis 2: launch.legal_grid): every
    kernel with an axis 1 compiles for sm_90 reading its blocks from both axes (other code
    than without), still in registers."""
    path, consts, options = _folding_launches(padre3, hyena)[kernel]
    plain, folded = (aot.compile_kernel(path, kernel, dict(consts, FOLD=f), **options)
                     for f in (False, True))
    assert folded.stack == 0 and folded.ptx_lines != plain.ptx_lines


@pytest.mark.parametrize(("change", "message"), [
    (dict(BK=16), "the strip must hold every tap"),
    (dict(SLAB=True, BH=24), "SLAB: KH <= 17, 16 | BH"),
    (dict(PARTS=4), "parts of 16+ columns"),
    (dict(HALO=4), "aligned strips start on an ALIGN column"),
])
def test_the_toeplitz_kernel_refuses_tiles_outside_its_preconditions(padre3, change, message):
    """The kernel's stated preconditions are compile-time assertions, not comments."""
    cfg = dict(padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=448, pad_w=5, align=8),
               **TOEPLITZ)
    with pytest.raises(Exception, match=re.escape(message)):
        aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel",
                           dict(FLAGS, **_taps(11), STORE_Z=True, STORE_O=True,
                                **aot.constexprs_of(dict(cfg, **change))),
                           num_warps=cfg["num_warps"])


@pytest.mark.parametrize(("kernel", "constexprs", "message"), [
    ("dwconv_toeplitz_wgrad_kernel", dict(BK=16), "the strip must hold every lag"),
    ("dwconv_hadamard_bwd_kernel", dict(USES_U=False), "u is read by dg"),
])
def test_the_backward_kernels_refuse_launches_outside_their_preconditions(
        padre3, kernel, constexprs, message):
    if kernel == "dwconv_toeplitz_wgrad_kernel":
        cfg = padre3.dwconv_toeplitz_config(384, 11, gpu=True, rows=448, pad_w=5, align=8)
        flags = dict(_taps(11), BD=16, **aot.constexprs_of(cfg))
        warps = cfg["num_warps"]
    else:  # a gate reads u: USES_U must be on
        cfg = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=True)
        flags = dict(FLAGS, **_taps(11), HAS_DZ=True, HAS_DO=True, RECOMPUTE=True,
                     **aot.constexprs_of(cfg))
        warps = cfg["num_warps"]
    with pytest.raises(Exception, match=re.escape(message)):
        aot.compile_kernel(PATH, kernel, dict(flags, **constexprs), num_warps=warps,
                           pointer_dtypes=GRADS)


def test_head_kernels_compile_without_spills_at_128_channel_heads() -> None:
    """head_state and head_apply at e = 128 (BE = 128), fp32 (IEEE, CUDA cores) and bf16
    (tensor cores), compile for sm_90 with 8 warps without spills. head_state's chunk loop
    stops at the chunk's last token; with the whole chunk's trip count (a constexpr) its fp32
    product spilled."""
    path = codegen_path("castling_vit", "triton")
    for e, bf16 in ((64, False), (128, False), (128, True)):
        be, dtype = max(64, 1 << (e - 1).bit_length()), "bf16" if bf16 else "fp32"
        state = aot.compile_kernel(path, "head_state_kernel",
                                   dict(E=e, IEEE=not bf16, CHUNK=1024, BT=64, BE=be),
                                   num_warps=8, pointer_dtype=dtype,
                                   pointer_dtypes={"p": "fp32", "pn": "fp32"})
        apply = aot.compile_kernel(path, "head_apply_kernel",
                                   dict(E=e, TRANS=False, F32=not bf16, BT=64 if bf16 else 32,
                                        BE=be),
                                   num_warps=8, pointer_dtype=dtype, pointer_dtypes={"s": "fp32"})
        assert state.stack == apply.stack == 0, (e, dtype, state, apply)


CAOTE_FOR_SM_90 = """
import json
import torch
from padre_compiler.backends.triton import aot
from padre_compiler.backends.triton.launch import COMPILING
from padre_compiler.caote import kernel

found = []
for name in ("caote_weights_kernel", "caote_partial_kernel", "caote_distance_kernel"):
    fn = getattr(kernel, name)

    def warmup(*args, _fn=fn, _name=name, **kw):
        compiled = type(_fn).warmup(_fn, *args, **kw)
        sass = aot._cuobjdump(compiled.asm["cubin"], "-sass")
        atomic = ("global atomic", "shared atomic")  # either makes the sums' order vary
        ops = {op for op, _, _ in aot._instructions(sass)[0] if aot._kind(op) in atomic}
        found.append({"kernel": _name, "spills": aot.spills_of(sass), "atomics": sorted(ops)})
        return compiled

    fn.warmup = warmup
kernel.triton_runs_on = lambda t: True  # CPU tensors, launched as on a GPU
token = COMPILING.set(True)
with aot.jit_for_sm(90):
    for t, s, chunk, dtype in ((1, 1, 32, torch.float32), (4096, 1, 4096, torch.bfloat16),
                               (4096, 4, 1024, torch.float16), (3200, 100, 32, torch.bfloat16)):
        kernel.token_split = lambda t_, rows, device, s=s, chunk=chunk: (s, chunk)
        for fast in (False, True):
            kernel.caote_scores_fused(torch.rand(1, 32, t),
                                      torch.randn(1, 8, t, 128, dtype=dtype), fast)
COMPILING.reset(token)
print(json.dumps(found))
"""


def test_caote_kernels_compile_for_sm_90(tmp_path) -> None:
    """The three CAOTE score kernels, launched by caote_scores_fused at decode shapes (32 query
    heads on 8 KV heads of 128; one token, S = 1 of 4,096 tokens, S = 4, S = 100: folds of
    several steps of CAOTE_TILE["SB"] chunks; every value dtype the evictor passes), compiled
    by Triton's JIT for sm_90 as each launch specialises it: the interpreter runs what the GPU
    compiler refuses (a loop-carried scalar whose type changes in row_top's or row_sums' fold,
    say), and none spills or issues an atomic."""
    found = compiled_json(CAOTE_FOR_SM_90, tmp_path)
    assert len(found) == 3 * 4 * 2, found
    assert all(r["spills"] == [0, 0] and r["atomics"] == [] for r in found), found


def test_warp_reductions_and_shared_atomics_are_not_global_atomics() -> None:
    """REDUX (a warp's integer reduction, sm_80 on) and ATOMS (a shared-memory atomic) share
    prefixes with RED and ATOM, the global atomics a deterministic kernel must not issue."""
    assert aot._kind("REDUX.SUM.S32") == "warp reduction"
    assert aot._kind("ATOMS.ADD") == "shared atomic"
    for op in ("RED.E.ADD.F32.FTZ.RN.STRONG.GPU", "REDG.E.ADD.F32.FTZ.RN.STRONG.GPU",
               "ATOM.E.ADD.STRONG.GPU", "ATOMG.E.CAS.STRONG.GPU"):
        assert aot._kind(op) == "global atomic", op
