"""Static GPU-legality check: what the interpreter accepts but a GPU compiler rejects."""

from __future__ import annotations

import itertools

import pytest

import padre_compiler as pc
from padre_compiler.backends.triton import legality, tile_shapes
from padre_compiler.cli import codegen_path
from padre_compiler.spec.loader import bundled_specs

SOURCE = codegen_path("padre3", "triton").read_text()


def _runtime():
    module = pc.compile("padre3", dim=4, grid=(2, 2), backend="triton")
    return __import__("sys").modules[type(module).__module__]


def test_kernels_are_found_with_their_aranges_and_dots() -> None:
    shapes = legality.kernel_shapes(SOURCE)
    assert set(shapes) == {"dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel",
                           "dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_wgrad_kernel",
                           "tf32_high", "strip_tile", "inside", "slab_tile", "slab_strip",
                           "accumulate", "stacked_rows", "in_bias_conv", "outer_tile",
                           "grid_axis1"}
    assert set(shapes["dwconv_hadamard_fwd_kernel"].aranges) == {"BT", "BC"}
    assert shapes["dwconv_hadamard_fwd_kernel"].dots == 0
    assert shapes["dwconv_toeplitz_fwd_kernel"].dots == 1  # the band's
    assert shapes["in_bias_conv"].dots == 4  # the input bias's: counted as its caller's
    assert "in_bias_conv" in shapes["dwconv_toeplitz_fwd_kernel"].calls
    assert shapes["slab_strip"].dots == 1  # the slab's row shift: declared by its callers
    assert "slab_strip" in shapes["dwconv_toeplitz_fwd_kernel"].calls
    assert shapes["dwconv_toeplitz_wgrad_kernel"].dots == 1
    assert shapes["dwconv_toeplitz_fwd_kernel"].constexprs == (("BP", "BK // PARTS"),)


@pytest.mark.parametrize("name", [p.stem for p in bundled_specs()])
def test_every_launch_config_is_gpu_legal(name: str) -> None:
    """The launchers' block sizes for every width and length the benchmark uses (and odd ones)
    pass the check for both kernel forms, in 16- and 32-bit."""
    source = codegen_path(name, "triton").read_text()
    if "def dwconv_hadamard_fwd_kernel" not in source:
        pytest.skip(f"{name} has no fused region")
    m = _runtime()
    for c in (1, 5, 384, 768, 1152, 2304):
        for n in (1, 49, 196, 3136, 102400):
            cfg = m.dwconv_hadamard_config(n, c, gpu=True)
            for kernel in ("dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel"):
                legality.assert_legal(source, kernel, cfg, num_warps=cfg["num_warps"],
                                      dot_tiles=m.DOT_TILES)
        if "def dwconv_toeplitz_fwd_kernel" not in source:  # 1-D convs: the direct form alone
            continue
        for kw, height in ((1, 8), (3, 14), (7, 320), (11, 14), (11, 56), (17, 80), (31, 9)):
            for elem_bytes, align in ((2, 1), (2, 8), (4, 1)):
                configs = m.dwconv_toeplitz_configs(c, kw, gpu=True, rows=height,
                                                    pad_w=kw // 2, align=align,
                                                    elem_bytes=elem_bytes)
                for cfg in configs:  # the default and every alternative the GPU times
                    cfg = {**m.TOEPLITZ_FWD_DEFAULTS, **cfg, "KP": m.in_bias_tile(kw, kw),
                           "HAS_IN_BIAS": 1}
                    legality.assert_legal(source, "dwconv_toeplitz_fwd_kernel", cfg,
                                          num_warps=cfg["num_warps"], dot_tiles=m.DOT_TILES,
                                          num_stages=cfg["num_stages"], elem_bytes=elem_bytes)
                for b in (1, 8, 128):  # every weight-gradient candidate
                    for cfg in m.wgrad_configs(c, kw, kw, True, b, height, kw // 2, align,
                                               elem_bytes)[0]:
                        wgrad = dict(cfg, BD=m.next_power_of_2(kw))
                        legality.assert_legal(source, "dwconv_toeplitz_wgrad_kernel", wgrad,
                                              num_warps=wgrad["num_warps"],
                                              dot_tiles=m.DOT_TILES,
                                              num_stages=wgrad["num_stages"],
                                              elem_bytes=elem_bytes)


@pytest.mark.parametrize(("kernel", "change", "message"), [
    ("dwconv_hadamard_fwd_kernel", {"BT": 48}, "not a power of two"),
    ("dwconv_hadamard_fwd_kernel", {"BT": 1024, "BC": 128}, "spills"),
    ("dwconv_hadamard_fwd_kernel", {"num_warps": 3}, "num_warps=3"),
    ("dwconv_toeplitz_fwd_kernel", {"BH": 8}, "dot tile M = 8"),
    ("dwconv_toeplitz_fwd_kernel", {"BW": 8, "BK": 16}, "dot tile N = 8"),
    ("dwconv_toeplitz_fwd_kernel", {"BC": 128, "BK": 128, "BW": 64, "BH": 64}, "shared memory"),
    ("dwconv_toeplitz_fwd_kernel", {"PARTS": 4}, "dot tile K = 8"),
])
def test_illegal_configs_are_rejected(kernel: str, change: dict, message: str) -> None:
    m = _runtime()
    cfg = (m.dwconv_hadamard_config(3136, 384, gpu=True) if "hadamard" in kernel
           else {**m.TOEPLITZ_FWD_DEFAULTS, **m.dwconv_toeplitz_config(384, 11, gpu=True),
                 "KP": 16, "HAS_IN_BIAS": 1})
    cfg = cfg | change
    with pytest.raises(legality.GpuLegalityError, match=message):
        legality.assert_legal(SOURCE, kernel, cfg, num_warps=cfg["num_warps"],
                              dot_tiles=m.DOT_TILES)


@pytest.mark.parametrize(("slab", "legal"), [(False, True), (True, False)])
def test_slab_shift_product_counts_where_it_runs(slab: bool, legal: bool) -> None:
    """The slab's [32, BC * BH / 16 * BK] operand decides shared memory only with SLAB: in
    fp32 at 3 stages it needs 266 KiB, the forward's band product 160 KiB and the weight
    gradient's 192 KiB; the launchers' estimate (which drops such candidates) agrees."""
    m = _runtime()
    cfg = {**m.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8),
           "KP": 16, "HAS_IN_BIAS": 1, "BAND_FROM_TAPS": False, "SLAB": slab, "PARTS": 1,
           "BD": 16}
    for kernel in ("dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_wgrad_kernel"):
        problems = legality.check_launch(SOURCE, kernel, cfg, num_warps=8, num_stages=3,
                                         elem_bytes=4, dot_tiles=m.DOT_TILES)
        assert (not problems) == legal, (kernel, problems)
    assert m.toeplitz_shared_bytes(cfg, 4) == (266_240 if slab else 163_840)
    assert m.toeplitz_shared_bytes(cfg, 4, wgrad=True) == (266_240 if slab else 196_608)
    tiles = m.wgrad_configs(384, 11, 11, True, 8, 56, 5, 8, elem_bytes=4)[0]
    assert tiles and not any(t["SLAB"] for t in tiles)  # fp32: the slab is dropped
    assert any(t["SLAB"] for t in m.wgrad_configs(384, 11, 11, True, 8, 56, 5, 8)[0])


@pytest.mark.parametrize("elem_bytes", [2, 4])
def test_a_forced_weight_gradient_slab_fits_in_shared_memory(elem_bytes: int) -> None:
    """PADRE_TRITON_CONV=slab takes the weight gradient's slab even where the candidates drop
    it (fp32 at 56 x 56: 260 KiB at 64 rows): its rows are cut until it fits (32 in fp32), and
    the launch passes the legality check; in bf16 it keeps the default tile's 64 rows."""
    m = _runtime()
    forced = m.wgrad_configs(384, 11, 11, True, 8, 56, 5, 8, elem_bytes)[1]
    assert forced["SLAB"] and forced["BH"] == (64 if elem_bytes == 2 else 32)
    assert m.toeplitz_shared_bytes(forced, elem_bytes, wgrad=True) <= m.SHARED_BYTES
    problems = legality.check_launch(SOURCE, "dwconv_toeplitz_wgrad_kernel",
                                     dict(forced, BD=16, PARTIAL=False),
                                     num_warps=forced["num_warps"],
                                     num_stages=forced["num_stages"], elem_bytes=elem_bytes,
                                     dot_tiles=m.DOT_TILES)
    assert not problems, problems


def test_undeclared_dot_is_rejected() -> None:
    m = _runtime()
    cfg = {**m.TOEPLITZ_FWD_DEFAULTS, **m.dwconv_toeplitz_config(384, 11, gpu=True), "KP": 16,
           "HAS_IN_BIAS": 1}
    problems = legality.check_launch(SOURCE, "dwconv_toeplitz_fwd_kernel", cfg,
                                     num_warps=4, dot_tiles={})
    assert any("declared" in p for p in problems)


def test_an_interpreter_only_kernel_is_caught() -> None:
    """A kernel the interpreter runs happily (non-power-of-two arange, 8-wide dot)."""
    source = '''
@triton.jit
def bad_fwd_kernel(x, BT: tl.constexpr, BK: tl.constexpr):
    o_t = tl.arange(0, BT)
    b_x = tl.load(x + o_t[:, None] * BK + tl.arange(0, BK)[None, :])
    tl.store(x, tl.dot(b_x, b_x))
'''
    problems = legality.check_launch(source, "bad_fwd_kernel", {"BT": 24, "BK": 8},
                                     num_warps=4, dot_tiles={"bad_fwd_kernel": [(1, "BT",
                                                                                 "BK", "BK")]})
    assert any("BT = 24 is not a power of two" in p for p in problems)
    assert any("dot tile N = 8" in p for p in problems)


def test_linear_attention_launch_configs_are_gpu_legal() -> None:
    source = codegen_path("sima", "triton").read_text()
    module = pc.compile("sima", dim=16, backend="triton")
    m = __import__("sys").modules[type(module).__module__]
    for e in (1, 5, 16, 48, 64):
        for n, cuda_cores in itertools.product((1, 196, 3136, 102400), (False, True)):
            cfg = m.head_config(n, e, gpu=True, cuda_core_apply=cuda_cores)
            consts = dict(E=e, IEEE=0, F32=0, TRANS=0, **{k: v for k, v in cfg.items()
                                                          if k != "num_warps"})
            for kernel in ("head_state_kernel", "head_apply_kernel"):
                legality.assert_legal(source, kernel, consts, num_warps=cfg["num_warps"],
                                      dot_tiles=m.DOT_TILES)


def test_long_convolution_and_caote_launch_configs_are_gpu_legal() -> None:
    """The long convolution's kernels at their fixed tiles, and every CAOTE score kernel (the
    module's *_kernel functions, all checked) at every head width up to 256 (BD: the next
    power of two, at least 16) and chunks a row from 1 to past one fold step (SB: S's power of
    two, at most CAOTE_TILE["SB"])."""
    from pathlib import Path

    from padre_compiler.caote import kernel as caote

    source = codegen_path("hyena", "triton").read_text()
    module = pc.compile("hyena", dim=16, backend="triton")
    m = __import__("sys").modules[type(module).__module__]
    tile = {k: v for k, v in m.LONG_CONV_TILE.items() if k != "num_warps"}
    for kernel in ("long_conv_in_kernel", "long_conv_out_kernel"):
        legality.assert_legal(source, kernel, tile, num_warps=m.LONG_CONV_TILE["num_warps"],
                              dot_tiles=m.DOT_TILES)
    legality.assert_legal(source, "spectral_correlation_kernel", {"BM": m.SPECTRAL_TILE["BM"]},
                          num_warps=m.SPECTRAL_TILE["num_warps"], dot_tiles=m.DOT_TILES)
    source = Path(caote.__file__).read_text()
    kernels = ("caote_weights_kernel", "caote_partial_kernel", "caote_distance_kernel")
    assert {k for k in legality.kernel_shapes(source) if k.endswith("_kernel")} == set(kernels)
    for kernel, d, fast, s in itertools.product(kernels, (1, 64, 96, 128, 256), (0, 1),
                                                (1, 17, 528)):
        legality.assert_legal(source, kernel, {"BT": caote.CAOTE_TILE["BT"],
                                               "BD": caote.head_block(d), "FAST": fast,
                                               "SB": caote.chunk_block(s)},
                              num_warps=caote.CAOTE_TILE["num_warps"], dot_tiles=m.DOT_TILES)


@pytest.mark.parametrize(("stages", "legal"), [(3, True), (4, False)])
def test_shared_memory_counts_the_pipelines_buffers(stages: int, legal: bool) -> None:
    """An H200 ran BC = 16, BH = 64 at 3 stages and refused it at 4 (OutOfResources: 245,760
    bytes, 3 buffers of 81,920): the check agrees on both."""
    m = _runtime()
    cfg = m.dwconv_toeplitz_config(384, 11, gpu=True, rows=56, pad_w=5, align=8)
    cfg = m.TOEPLITZ_FWD_DEFAULTS | cfg | {"BC": 16, "BH": 64, "num_stages": stages, "KP": 16,
                                           "HAS_IN_BIAS": 1}
    problems = legality.check_launch(SOURCE, "dwconv_toeplitz_fwd_kernel", cfg,
                                     num_warps=8, num_stages=stages, dot_tiles=m.DOT_TILES)
    assert (not problems) == legal, problems


@pytest.mark.parametrize("in_bias", [False, True])
def test_input_bias_products_count_only_where_they_run(in_bias: bool) -> None:
    """in_bias_conv's [KP, KP] tap tiles run under HAS_IN_BIAS: a 65 x 65 kernel's (KP = 128)
    need more shared memory than an H100 has with an input bias, and its [BC, KP, KP] fp32
    taps 4 x 128 x 128 / 256 threads = 256 registers per thread (conv_form takes the direct
    form past 33 taps); without one, nothing: a tile under a branch the launch does not take
    is not counted."""
    m = _runtime()
    cfg = {**m.TOEPLITZ_FWD_DEFAULTS, **m.dwconv_toeplitz_config(384, 65, gpu=True, rows=64),
           "KP": m.in_bias_tile(65, 65), "HAS_IN_BIAS": int(in_bias)}
    problems = legality.check_launch(SOURCE, "dwconv_toeplitz_fwd_kernel", cfg,
                                     num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                                     dot_tiles=m.DOT_TILES)
    assert bool(problems) == in_bias, problems
    if in_bias:
        assert any("shared memory" in p for p in problems), problems
        assert any("tile [4, 128, 128] of `tl.load(p_w" in p and "256 registers" in p
                   for p in problems), problems


LOADED = '''
@triton.jit
def loaded_tile_kernel(x, y, BT: tl.constexpr, BD: tl.constexpr):
    o_t = tl.arange(0, BT)
    b_x = tl.load(x + o_t[:, None] * BD + tl.arange(0, BD)[None, :])  # [BT, BD]
    tl.store(y + o_t, tl.sum(b_x, axis=1))
'''


@pytest.mark.parametrize(("bt", "legal"), [(64, True), (256, False)])
def test_a_loaded_tile_is_counted(bt: int, legal: bool) -> None:
    """The kernel's one 2-D tile is a load (no tl.zeros): [BT, 128] over 4 warps is 64
    registers per thread at BT = 64 and 256 at BT = 256, which spills."""
    problems = legality.check_launch(LOADED, "loaded_tile_kernel", {"BT": bt, "BD": 128},
                                     num_warps=4)
    assert (not problems) == legal, problems
    if not legal:
        assert len(problems) == 1, problems
        assert "tile [256, 128] of `tl.load(" in problems[0], problems
        assert "256 registers per thread at num_warps=4" in problems[0], problems


@pytest.mark.parametrize(("elem_bytes", "regs"), [(2, 1), (4, 1), (8, 2)])
def test_a_load_takes_a_register_per_element_two_for_64_bits(elem_bytes: int,
                                                             regs: int) -> None:
    tiles, unsized = tile_shapes.register_tiles(LOADED, "loaded_tile_kernel",
                                                {"BT": 64, "BD": 128}, elem_bytes)
    assert not unsized
    (load,) = (t for t in tiles if t.expr.startswith("tl.load("))
    assert load.shape == (64, 128) and load.regs == regs


REDUCED = '''
@triton.jit
def reduced_kernel(x, y, BT: tl.constexpr):
    o_t = tl.arange(0, BT)
    b_x = tl.load(x + o_t[:, None] * BT + o_t[None, :])  # [BT, BT]
    b_top = tl.argmax(b_x, 1, True)  # tie_break_left, not keep_dims: [BT]
    b_max, b_at = tl.max(b_x, 1, True)  # return_indices: ([BT], [BT])
    b_kept = tl.sum(b_x, 1, True)  # keep_dims: [BT, 1]
    b_wide = b_at + o_t.to(tl.int64) * BT  # int32 data, int64 offsets: int64 [BT]
    b_far = tl.maximum(b_at, o_t.to(tl.int64))  # the same, elementwise
    tl.store(y + o_t, b_top + b_max + b_wide + b_far + tl.sum(b_kept, axis=1))
'''


def test_reductions_read_their_own_positional_arguments_and_int64_takes_two() -> None:
    """The third positional argument is keep_dims for tl.sum, tie_break_left for tl.argmax
    and return_indices for tl.max; an int32 tile plus int64 offsets is int64."""
    tiles, unsized = tile_shapes.register_tiles(REDUCED, "reduced_kernel", {"BT": 64})
    assert not unsized, unsized
    shapes = {t.expr.split(" =")[0]: (t.shape, t.regs) for t in tiles}
    assert shapes["tl.argmax(b_x, 1, True)"] == ((64,), 1)
    assert shapes["tl.sum(b_x, 1, True)"] == ((64, 1), 1)
    assert shapes["b_at + o_t.to(tl.int64) * BT"] == ((64,), 2)
    assert shapes["tl.maximum(b_at, o_t.to(tl.int64))"] == ((64,), 2)
    assert all(t.shape in ((64,), (64, 1)) for t in tiles if not t.expr.startswith("tl.load"))


@pytest.mark.parametrize(("consts", "legal"), [({"BIG": 0}, True), ({"BIG": 1}, False),
                                               ({}, False)])
def test_tiles_count_on_the_branches_a_launch_takes(consts: dict, legal: bool) -> None:
    """A tl.full tile under a constexpr branch counts where the launch takes it, and where
    the launch leaves the constexpr open (both ways)."""
    source = '''
@triton.jit
def branch_kernel(y, BT: tl.constexpr, BIG: tl.constexpr):
    b_y = tl.zeros([BT], dtype=tl.float32)
    if BIG:
        b_y += tl.sum(tl.full([BT, 1024], 1.0, tl.float32), axis=1)
    tl.store(y + tl.arange(0, BT), b_y)
'''
    problems = legality.check_launch(source, "branch_kernel", {"BT": 64, **consts},
                                     num_warps=4)
    assert (not problems) == legal, problems
    assert all("tile [64, 1024] of `tl.full(" in p for p in problems), problems


def test_an_unsized_tile_is_reported() -> None:
    """A tile the interpreter cannot size is a problem, not a tile left out."""
    source = '''
@triton.jit
def opaque_kernel(x, BT: tl.constexpr):
    o_t = offsets(BT)
    tl.store(x + o_t, tl.load(x + o_t) * 2)
'''
    problems = legality.check_launch(source, "opaque_kernel", {"BT": 64}, num_warps=4)
    assert problems == ["opaque_kernel: cannot size `offsets(BT)` (opaque_kernel, line 4): "
                        "the name offsets is not bound in the source"], problems


@pytest.mark.parametrize(("warps", "legal"), [(8, True), (4, False)])
def test_the_slab_load_is_counted_through_its_helpers(warps: int, legal: bool) -> None:
    """slab_tile loads [BC, 2 BH, BK] through strip_tile (a helper's load, sized by its
    caller's aranges): 8 x 128 x 32 values are 128 registers per thread at 8 warps and 256
    at 4, while the accumulator [BC, BH, BW] is 64 at 4 warps: the load, not the
    accumulator, sets the warps."""
    m = _runtime()
    cfg = {**m.TOEPLITZ_FWD_DEFAULTS, **m.dwconv_toeplitz_config(384, 11, gpu=True, rows=56,
                                                                   pad_w=5, align=8),
           "KP": 16, "HAS_IN_BIAS": 1, "SLAB": True, "num_warps": warps}
    assert (cfg["BC"], cfg["BH"], cfg["BK"]) == (8, 64, 32)
    problems = legality.check_launch(SOURCE, "dwconv_toeplitz_fwd_kernel", cfg,
                                     num_warps=warps, num_stages=cfg["num_stages"],
                                     dot_tiles=m.DOT_TILES)
    assert (not problems) == legal, problems
    if not legal:
        assert any("tile [8, 128, 32] of `tl.load(p_x" in p and "(strip_tile, line" in p
                   and "256 registers" in p for p in problems), problems
