"""What ptxas makes of the generated Triton kernels for an H100 (sm_90), measured on a CPU.

    .venv/bin/python benchmarks/triton_aot.py [--baseline-rev GIT_REV ...] [--triton-version V]
    # writes benchmarks/results/triton_aot.{md,json,png} (triton_aot_triton-V.* with V)

Compiles padre3's kernels (direct forward, backward, tensor-core Toeplitz forward and weight
gradient, the latter also with its strips from one slab; the Toeplitz forward also at 2 and 1
pipeline stages, storing u for the backward, with strip copies that allocate in L1, on 4-, 2-
and un-aligned strips, with its band gathered from the taps (also at 1 stage), with its strips
from one slab (SLAB: at 3 and 2 stages, with the band gathered, on 4 channels and 4 warps, on
32 rows, in two column parts at 3 and 2 stages, and on 4-, 2- and un-aligned strips), and as
the 3C-wide conv launches it, with and without the dense map's bias folded in) at the launch
configurations their launchers pick for padre3 on a GPU (C = 384, 56 x 56 tokens, 11 x 11 taps,
bf16, every other fusion flag on; counted per element of a program's tile, and, for the
Toeplitz forward at the tiles of 8 x 56 x 56, 32 x 28 x 28 and 128 x 14 x 14 tokens, per
output stored: stored_run) with a cold Triton cache, specialised as the JIT specialises
an aligned launch, and reads registers, stack (spilled registers) and shared memory from the
cubin (shared memory: what a launch requests; programs per SM: the occupancy registers and
shared memory allow) and the warp instructions each program issues per output element from its
SASS (padre_compiler/backends/triton/aot.py); one compile per CPU at a time, each in its own
process. The CUDA-core floor of an 11 x 11 depthwise tap sum is 121 / 32 = 3.78 warp FMAs per
output. With --baseline-rev, the same for codegen/triton/padre3.py as committed at each git
revision. With --triton-version, compiled by that Triton release (fetched with pip once)
instead of the installed one: the lent GPU machine's own (3.6.0 on the H200 of gpu_padre3.md).
Then, in a table of their own (current source only), SimA's and Castling-ViT's linear-attention
kernels with each of their flags' variants (measure_attention)."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from padre_compiler.backends.triton import aot  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
FLAGS = dict(KH=11, KW=11, PH=5, PW=5, HAS_BIAS=True, HAS_GATE=True, HAS_ACC=True,
             HAS_ACC_SCALE=True, HAS_SCALE=True)
FP32_GRADS = {k: "fp32" for k in ("dw", "db", "ds", "dsa")}
FMA_FLOOR = FLAGS["KH"] * FLAGS["KW"] / 32  # warp FMAs per output of the tap sum on CUDA cores
CLASSES = ("global load", "global->shared copy", "shared store", "tensor core", "fp32 fma", "other")


def _launchers(path: Path):
    """The generated module, for its launch-configuration functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"aot_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(module, name: str, *args, **kw) -> dict:
    """The launcher's tiles; rows (the rows a tile runs over) is height in older launchers,
    which may also lack backward, pad_w and align."""
    if "rows" in kw and "rows" not in inspect.signature(getattr(module, name)).parameters:
        kw["height"] = kw.pop("rows")
    try:
        return getattr(module, name)(*args, **kw)
    except TypeError:  # an older launcher without the keywords
        for key in ("backward", "pad_w", "align"):
            kw.pop(key, None)
        return getattr(module, name)(*args, **kw)


GRIDS = ((8, 56), (32, 28), (128, 14))  # padre3's benchmark batches of 25,088 tokens


def stored_run(m, b: int, h: int, flags: dict, stages: int) -> tuple:
    """A census run of the Toeplitz forward at the launcher's tiles for b images of h x h
    tokens (C = 384), counted per stored output: the b h h C outputs over the grid's programs
    (row tiles over the images stacked, toeplitz_grid; before it, over each image's rows,
    a tile padded to BH per image)."""
    align = min(h & -h, 8)  # strip_alignment of an h-wide grid
    stacked = hasattr(m, "toeplitz_grid")
    cfg = _config(m, "dwconv_toeplitz_config", 384, 11, gpu=True,
                  rows=b * h if stacked else h, pad_w=5, align=align)
    grid = (m.toeplitz_grid(cfg, b, h, h, 384) if stacked else
            (-(-h // cfg["BH"]) * -(-h // cfg["BW"]), -(-384 // cfg["BC"]), b))
    return (f"dwconv_toeplitz_fwd_kernel ({b} x {h} x {h}, per stored output)",
            "dwconv_toeplitz_fwd_kernel", flags, cfg, stages, {}, (FLAGS["KH"],),
            b * h * h * 384 / math.prod(grid))


WGRAD_FLAGS = dict(KH=11, KW=11, PH=5, PW=5, BD=16, s_xn=1, s_dun=1)


def stored_wgrad_run(m, b: int, h: int, rows: int | None = None) -> tuple:
    """A census run of the weight gradient at the launcher's tiles (BH = rows where given:
    its first launch's 32-row candidate) for b images of h x h tokens (C = 384), counted per
    du element it reads: the b h h C elements over the grid's programs (row groups over the
    images' rows stacked, wgrad_grid; before it, an image a program, its rows tiled apart,
    the last tile padded to BH)."""
    align = min(h & -h, 8)
    stacked = hasattr(m, "wgrad_grid")
    cfg = _config(m, "dwconv_toeplitz_config", 384, 11, gpu=True,
                  rows=b * h if stacked else h, pad_w=5, align=align)
    cfg = cfg if rows is None else dict(cfg, BH=rows)
    grid, group = (m.wgrad_grid(cfg, b, h, h, 384) if stacked else
                   ((-(-h // cfg["BW"]), -(-384 // cfg["BC"]), b), h))
    note = "" if rows is None else f", {rows} rows"
    return (f"dwconv_toeplitz_wgrad_kernel ({b} x {h} x {h}{note}, per du element)",
            "dwconv_toeplitz_wgrad_kernel", WGRAD_FLAGS, cfg, 2, {"dw": "fp32"},
            (-(-group // cfg["BH"]), FLAGS["KH"]), b * h * h * 384 / math.prod(grid))


def measure(path: Path, triton_path: Path | None = None) -> list[dict]:
    """padre3's kernels as its GPU module launches them in bf16. Forward: the Toeplitz form on
    the channel-major dense output (token stride 1, 16-byte aligned rows); the direct form on
    token-major tensors (channel stride 1). Backward, Toeplitz path: the elementwise kernel
    (u given, du stored channel-major) and the tensor-core weight gradient over the 56 rows;
    direct path (fp32, or a GPU rejecting the 3-D dot): the recomputing kernel, token-major.
    A stride of 1 is a constant, as the JIT specialises it. Kernels a revision lacks, or its
    kernels without the later arguments, are compiled as that revision had them."""
    m = _launchers(path)
    text = path.read_text()
    direct = _config(m, "dwconv_hadamard_config", 3136, 384, gpu=True)
    backward = _config(m, "dwconv_hadamard_config", 3136, 384, gpu=True, backward=True)
    toeplitz = _config(m, "dwconv_toeplitz_config", 384, 11, gpu=True, rows=56, pad_w=5,
                       align=8)
    strided = "s_xc" in text
    token_major = {"s_xc": 1} if strided else {}
    channel_major = {"s_xn": 1} if strided else {}
    taps = (FLAGS["KH"], FLAGS["KW"])
    grads = dict(FLAGS, HAS_DZ=True, HAS_DO=True, **token_major)
    recompute = {"RECOMPUTE": True} if "RECOMPUTE" in text else {}
    if "USES_U" in text:  # FLAGS have the gate: u enters dg
        recompute["USES_U"] = True
    toeplitz_off = {"HAS_IN_BIAS": False, "KP": 16} if "HAS_IN_BIAS" in text else {}
    for flag in ("BAND_FROM_TAPS", "SLAB"):
        if flag in text:
            toeplitz_off[flag] = False
    if "PARTS" in text:
        toeplitz_off["PARTS"] = 1
    if "STORE_U" in text:  # u kept for a backward: training's forward, not inference's
        toeplitz_off["STORE_U"] = False
    runs = [  # label, kernel, flags, tiles, stages (where the tiles name none), pointer types,
        # loop trips, outputs / program
        ("dwconv_hadamard_fwd_kernel", "dwconv_hadamard_fwd_kernel",
         dict(FLAGS, STORE_Z=True, STORE_O=True, **token_major), direct, 3, {}, taps,
         direct["BT"] * direct["BC"]),
        ("dwconv_hadamard_bwd_kernel (recompute)",  # what every earlier revision's did
         "dwconv_hadamard_bwd_kernel", dict(grads, **recompute), backward, 3, FP32_GRADS, taps,
         backward["BT"] * backward["BC"]),
        ("dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_fwd_kernel",
         dict(FLAGS, STORE_Z=True, STORE_O=True, **channel_major, **toeplitz_off), toeplitz, 2,
         {}, taps[:1], toeplitz["BC"] * toeplitz["BH"] * toeplitz["BW"]),
    ]
    if recompute:
        runs.append(("dwconv_hadamard_bwd_kernel (u given)", "dwconv_hadamard_bwd_kernel",
                     dict(FLAGS, HAS_DZ=True, HAS_DO=True, **dict(recompute, RECOMPUTE=False),
                          s_dun=1), backward, 3, dict(FP32_GRADS, u="fp32"), (),
                     backward["BT"] * backward["BC"]))
    if "dwconv_toeplitz_wgrad_kernel" in text:
        wgrad = dict(toeplitz)  # the launcher's tiles for one 56-row image (stored_wgrad_run:
        # for the images' rows stacked)
        flags = WGRAD_FLAGS
        body = text[text.index("def dwconv_toeplitz_wgrad_kernel"):]
        rows_outside = body.index("for i_r in range(") < body.index("for i_kh in range(")
        # 160 rows: 25,600 tokens, three row tiles; one stage: plain (L1-cached) strip loads
        variants = [(56, "", wgrad), (160, " (160 rows)", wgrad),
                    (56, " (2 stages)", dict(wgrad, num_stages=2)),
                    (56, " (1 stage)", dict(wgrad, num_stages=1))]
        if "SLAB" in body:  # each row tile's strips from one slab
            variants += [(56, " (slab)", dict(wgrad, SLAB=True)),
                         (160, " (slab, 160 rows)", dict(wgrad, SLAB=True))]
        for rows, note, cfg in variants:
            tiles = -(-rows // wgrad["BH"])
            runs.append(("dwconv_toeplitz_wgrad_kernel" + note,
                         "dwconv_toeplitz_wgrad_kernel", flags, cfg, 2, {"dw": "fp32"},
                         (tiles, 11) if rows_outside else (11, tiles),
                         wgrad["BC"] * rows * wgrad["BW"]))
    if "ALIGN" in text:  # the Toeplitz forward at 2 stages, and on 4-, 2- and un-aligned strips
        label, *rest = runs[2]  # (28 x 28 and 14 x 14 grids)
        variants = {"2 stages": dict(toeplitz, num_stages=2),
                    "1 stage": dict(toeplitz, num_stages=1)}
        if "STRIP_CACHE" in text:
            variants["strip copies into L1"] = dict(toeplitz, STRIP_CACHE=".ca")
        for a in (4, 2, 1):
            variants[f"ALIGN={a}"] = _config(m, "dwconv_toeplitz_config", 384, 11, gpu=True,
                                             rows=56, pad_w=5, align=a)
            if "SLAB" in text:  # one load of the slab instead of a narrow strip per row tap
                variants[f"slab, ALIGN={a}"] = dict(variants[f"ALIGN={a}"], SLAB=True)
        runs += [(f"{label} ({name})", rest[0], rest[1], cfg, *rest[3:])
                 for name, cfg in variants.items()]
    if "STORE_U" in text:  # a gated conv's forward under autograd: u stored for the backward
        label, kernel, flags, cfg, stages, ptrs, *rest = runs[2]
        runs.append((f"{label} (u kept for the backward)", kernel, dict(flags, STORE_U=True),
                     cfg, stages, dict(ptrs, u="fp32"), *rest))
    if "BAND_FROM_TAPS" in text:  # the band gathered from 16-bit and from 32-bit taps
        label, kernel, flags, cfg, stages, _, *rest = runs[2]
        runs += [(f"{label} (band from {bits} taps{note})", kernel, flags,
                  dict(cfg, BAND_FROM_TAPS=True, **more), stages, ptrs, *rest)
                 for bits, ptrs, note, more in (("16-bit", {}, "", {}),
                                                ("32-bit", {"w": "fp32"}, "", {}),
                                                ("16-bit", {}, ", 1 stage", {"num_stages": 1}))]
    if "SLAB" in text:  # the strips from one slab per program: 3 and 2 stages, band gathered,
        # the tiles with the registers for 3 programs an SM (4 channels on 4 warps, 32 rows on
        # 8), and the strip in two column parts
        label, kernel, flags, cfg, stages, ptrs, trips, _ = runs[2]
        parts = ((", 2 column parts", {"PARTS": 2}),
                 (", 2 column parts, 2 stages", {"PARTS": 2, "num_stages": 2})
                 ) if "PARTS" in text else ()
        for note, more in (("", {}), (", 2 stages", {"num_stages": 2}),
                           (", band from 16-bit taps", {"BAND_FROM_TAPS": True}),
                           (", 4 channels, 4 warps, 2 stages",
                            {"BC": 4, "num_warps": 4, "num_stages": 2}),
                           (", 32 rows, 2 stages", {"BH": 32, "num_stages": 2}), *parts):
            slab = dict(cfg, SLAB=True, **more)
            runs.append((f"{label} (slab{note})", kernel, flags, slab, stages, ptrs, trips,
                         slab["BC"] * slab["BH"] * slab["BW"]))
    if toeplitz_off:  # padre3's 3C-wide conv: conv bias only, then with the dense's bias folded
        label, kernel, flags, *rest = runs[2]
        alone = dict(flags, HAS_GATE=False, HAS_ACC=False, HAS_ACC_SCALE=False,
                     HAS_SCALE=False, STORE_O=False)
        runs += [(f"{label} (3C conv)", kernel, alone, *rest),
                 (f"{label} (3C conv, input bias folded)", kernel,
                  dict(alone, HAS_IN_BIAS=True), *rest)]
        if "SLAB" in text:  # and as slab candidates run it (whole, 4-channel and 32-row tiles,
            # two parts)
            cfg, stages, ptrs, trips, _ = rest
            slabs = [("", {}), (", 4 channels, 4 warps", {"BC": 4, "num_warps": 4}),
                     (", 32 rows", {"BH": 32})]
            slabs += [(", 2 column parts", {"PARTS": 2})] if "PARTS" in text else []
            for note, part in slabs:
                slab = dict(cfg, SLAB=True, num_stages=2, **part)
                runs.append((f"{label} (3C conv, input bias folded, slab{note}, 2 stages)",
                             kernel, dict(alone, HAS_IN_BIAS=True), slab, stages, ptrs, trips,
                             slab["BC"] * slab["BH"] * slab["BW"]))
    if "ALIGN" in text:  # per stored output at the benchmark's batches
        runs += [stored_run(m, b, h, runs[2][2], runs[2][4]) for b, h in GRIDS]
        if "dwconv_toeplitz_wgrad_kernel" in text and rows_outside:  # and per du element
            runs += [stored_wgrad_run(m, b, h) for b, h in GRIDS]
            if hasattr(m, "wgrad_grid"):  # the 32-row candidate
                runs += [stored_wgrad_run(m, b, h, rows=32) for b, h in GRIDS]
    if "I64" in text:  # an offset reaching 2**31 (index_widths): batch offsets in int64
        runs += [(f"{label} (I64)", kernel, dict(flags, I64=True), *rest)
                 for label, kernel, flags, *rest in runs[2:4]]  # Toeplitz fwd, bwd (u given)

    return compile_runs(path, runs, triton_path)


def measure_attention(path: Path, triton_path: Path | None = None) -> list[dict]:
    """SimA's and Castling-ViT's linear-attention kernels (`path`: a module that has them) as
    their GPU launches run them in bf16 at D = 384, 8 heads (e = 48), 3,136 tokens
    (head_config's tiles): the state kernel (per element of its [CHUNK, e] chunk of k) plain,
    with k's rows l2-normalised and with k's l1 norms made; head_apply (per output element)
    plain, with q's rows normalised, as the backward's normalisation product, with
    Castling-ViT's output epilogue (forward and its backward launch), and with SimA's signed
    l1 term (per-batch fp32 scales)."""
    cfg = _launchers(path).head_config(3136, 48, True)
    state = dict(E=48, IEEE=False, **{k: cfg[k] for k in ("CHUNK", "BT", "BE")})
    apply = dict(E=48, TRANS=False, F32=False, BT=cfg["BT"], BE=cfg["BE"])
    out = dict(A_NORM=True, RES=True, RES_SCALE=True, OUT_NORM=True)
    tiles = {"num_warps": cfg["num_warps"]}
    runs = [(f"head_state_kernel{note}", "head_state_kernel", dict(state, **flags), tiles, 3,
             {"p": "fp32", "pn": "fp32"}, (cfg["CHUNK"] // cfg["BT"],), cfg["CHUNK"] * 48)
            for note, flags in (("", {}), (" (k's rows l2-normalised)", {"A_NORM": True}),
                                (" (k's l1 norms)", {"A_L1": True}))]
    runs += [(f"head_apply_kernel{note}", "head_apply_kernel", dict(apply, **flags), tiles, 3,
              {"s": "fp32", **ptrs}, (), cfg["BT"] * 48)
             for note, flags, ptrs in (
                 ("", {}, {}), (" (q's rows l2-normalised)", {"A_NORM": True}, {}),
                 (" (normalisation's product, backward)", {"VJP": True}, {}),
                 (" (Castling-ViT's output)", dict(out, POST=True), {}),
                 (" (Castling-ViT's output, backward)", dict(out, OUT_VJP=True),
                  {"dd": "fp32"}),
                 (" (SimA's l1 term, backward)", dict(RES=True, RES_SCALE=True, RES_SGN=True),
                  {"d": "fp32"}))]
    return compile_runs(path, runs, triton_path)


def compile_runs(path: Path, runs: list[tuple], triton_path: Path | None) -> list[dict]:
    """Each run (label, kernel, flags, tiles and launch options, stages where the tiles name
    none, pointer types, loop trips, outputs a program makes) compiled, one child process
    per CPU; its resources and SASS census per output."""

    def row(label, kernel, flags, cfg, stages, ptrs, trips, outputs) -> dict:
        stages = cfg.get("num_stages", stages)  # a revision's launcher that names its own
        r = aot.compile_kernel(path, kernel, dict(flags, **aot.constexprs_of(cfg)),
                               num_warps=cfg["num_warps"], num_stages=stages,
                               pointer_dtypes=ptrs, trips=trips, triton_path=triton_path)
        return {"kernel": label, "tiles": dict(cfg, num_stages=stages), "triton": r.triton,
                "seconds": r.seconds, "ptx_lines": r.ptx_lines, "registers": r.registers,
                "stack": r.stack, "shared": r.shared, "mma": r.mma,
                "programs_per_sm": r.programs_per_sm(), "outputs": outputs,
                "per_output": r.census.per(outputs),
                "l1_copies_per_output": r.census.l1_copies / outputs,
                "load_widths": {str(w): n for w, n in sorted(r.census.widths.items())}}

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # one child process per CPU
        return list(pool.map(lambda run: row(*run), runs))


def operand_bytes(kernel: str, tiles: dict, outputs: float | None = None,
                  elem_bytes: int = 2) -> float | None:
    """Bytes of strip and band a Toeplitz forward program loads per output, by tile
    arithmetic (not measured; what L1 may absorb is not subtracted): per row tap a
    [BH, BK] strip and a [BK, BW] band for [BH, BW] outputs, or with SLAB the [2 BH, BK]
    slab once; a band gathered from the taps (L1-resident) is not counted. Per element of
    the program's tile, or of its `outputs` (stored_run's) where given."""
    if not kernel.startswith("dwconv_toeplitz_fwd_kernel"):
        return None
    kh, bh, bw, bk, bc = FLAGS["KH"], tiles["BH"], tiles["BW"], tiles["BK"], tiles["BC"]
    strip = 2 * bh * bk if tiles.get("SLAB") else kh * bh * bk
    band = 0 if tiles.get("BAND_FROM_TAPS") else kh * bk * bw
    return (strip + band) * elem_bytes * bc / (outputs or bc * bh * bw)


def table(rows: list[dict], floor: float | None = FMA_FLOOR) -> list[str]:
    """The rows' resources and their census per output, against `floor` (warp instructions
    per output; None: no floor applies)."""
    lines = ["| kernel | tiles, warps | cold compile s | PTX lines | registers / thread | "
             "stack bytes / thread (spills) | shared bytes | programs / SM | tensor cores |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tiles = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                          for k, v in r["tiles"].items())
        lines.append(f"| {r['kernel']} | {tiles} | {r['seconds']:.1f} | {r['ptx_lines']} | "
                     f"{r['registers']} | {r['stack']} | {r['shared']} "
                     f"| {r.get('programs_per_sm', '-')} | {r['mma']} |")
    lines += ["", "Warp instructions issued per output element (SASS, loops weighted by their "
              "trip counts; backward: per element of du):", "",
              "| kernel | total | x FMA floor | " + " | ".join(CLASSES)
              + " | of which copies into L1 | global loads by width (bytes: share) "
              "| strip + band bytes / output (tile arithmetic) |",
              "|---|---|---|" + "---|" * len(CLASSES) + "---|---|---|"]
    for r in rows:
        per = r["per_output"]
        loads = sum(r["load_widths"].values())
        widths = ", ".join(f"{w}: {n / loads:.0%}" for w, n in r["load_widths"].items())
        ratio = "-" if floor is None else f"{per['total'] / floor:.2f}"
        lines.append(f"| {r['kernel']} | {per['total']:.2f} | {ratio} | "
                     + " | ".join(f"{per.get(k, 0.0):.2f}" for k in CLASSES)
                     + f" | {r.get('l1_copies_per_output', 0.0):.2f} | {widths} | "
                     + ("" if (b := operand_bytes(r["kernel"], r["tiles"], r.get("outputs")))
                        is None
                        else f"{b:.1f}") + " |")
    return lines


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = list(dict.fromkeys(r["kernel"] for rows in runs.values() for r in rows))
    kernels = [n.replace("_kernel", "").replace("dwconv_", "") for n in names]
    width = 0.8 / len(runs)
    for i, (label, rows) in enumerate(runs.items()):  # a kernel a revision lacks: no bar
        xs = [names.index(r["kernel"]) + i * width for r in rows]
        axes[0].bar(xs, [max(r["stack"], 0.5) for r in rows], width, label=label)
        axes[1].bar(xs, [r["seconds"] for r in rows], width, label=label)
        axes[2].bar(xs, [r["per_output"]["total"] for r in rows], width, label=label)
    axes[2].axhline(FMA_FLOOR, color="k", lw=0.8, ls="--")
    axes[2].text(0, FMA_FLOOR, " CUDA-core FMA floor", fontsize=7, va="bottom")
    for ax, title in zip(axes, ("stack bytes / thread (spills; 0 drawn at 0.5)",
                                "cold compile, s", "warp instructions / output"),
                         strict=True):
        ax.set_xticks([k + width * (len(runs) - 1) / 2 for k in range(len(kernels))])
        ax.set_xticklabels(kernels, rotation=20, fontsize=7, ha="right")
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT / "codegen" / "triton" / "padre3.py")
    parser.add_argument("--baseline-rev", nargs="*", default=[],
                        help="compare with padre3's codegen at these git revs")
    parser.add_argument("--triton-version", help="compile with this Triton release (pip)")
    args = parser.parse_args()
    if not aot.available():
        sys.exit("Triton with its NVIDIA backend (cuobjdump) is needed: pip install '.[triton]'")
    release = aot.triton_release(args.triton_version) if args.triton_version else None
    stem = "triton_aot" + (f"_triton-{args.triton_version}" if release else "")
    runs, sources = {}, {"current": args.source.name}
    rel = "codegen/triton/padre3.py"
    for rev in args.baseline_rev:
        text = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"padre3_{rev}.py"
            path.write_text(text)
            runs[rev] = measure(path, release)
        sources[rev] = f"{rel} at {rev}"
    runs["current"] = measure(args.source, release)
    attention = measure_attention(ROOT / "codegen" / "triton" / "castling_vit.py", release)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(dict(runs, attention=attention), indent=2))
    lines = ["# Generated Triton kernels compiled for sm_90 on a CPU (no GPU)", "",
             "Command: `python benchmarks/triton_aot.py " + " ".join(sys.argv[1:]) + "`  ",
             f"Triton {runs['current'][0]['triton']}; padre3's launch configurations on a GPU "
             "(C = 384, 56 x 56 tokens, 11 x 11 taps, bf16, every fusion flag on); cold Triton "
             f"cache, {os.cpu_count()} compiles at a time (one a CPU); pointers and integer "
             "arguments specialised as 16-divisible, as the JIT does for an aligned launch. "
             "The CUDA-core floor of the tap sum is 121 / 32 = "
             f"{FMA_FLOOR:.2f} warp FMAs per output.", ""]
    for label, rows in runs.items():
        lines += [f"## {label}: `{sources[label]}`", "", *table(rows), ""]
    lines += ["## Linear attention: `castling_vit.py` (SimA's kernels are the same source)", "",
              "D = 384, 8 heads (e = 48), 3,136 tokens, bf16 (products on tensor cores). Per "
              "output: head_state per element of the k chunk a program reads, head_apply per "
              "element it writes.", "", *table(attention, None), ""]
    (OUT / f"{stem}.md").write_text("\n".join(lines))
    plot(runs, OUT / f"{stem}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
