"""Where compiled padre3's time goes on a GPU: host overhead vs device time, kernel by kernel.

    python benchmarks/gpu_profile.py            # on an H100/H200 (~1 minute); writes $OUT or
                                                # benchmarks/results/gpu_profile.{json,md}
    python benchmarks/gpu_profile.py --smoke    # CPU dry run (tiny sizes; a temporary folder)

Per (C, N, batch) and conv form (PADRE_TRITON_CONV: toeplitz, slab, direct), bf16:
- `launch_ms`: the forward as a Python call (median of CUDA-event timings, as gpu.py times it);
- `graph_ms`: the same forward replayed from a CUDA graph: device time alone, so
  launch_ms - graph_ms is what host overhead (Python, dispatch, launches) adds;
- `kernels`: torch.profiler's device time per kernel and forward (and per forward+backward),
  the largest first; `toeplitz_operand`, GEMMs and the fused kernels show up by name;
- a tile sweep of the Toeplitz forward on the 3C-wide conv alone (tile_sweep), beside cuDNN:
  each tile's output is compared with the default tiles' first (which is compared with
  cuDNN's), and a tile that disagrees is marked, not timed.

The JSON and markdown record the source digest and git revision (benchmarks/revisions.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu import (  # noqa: E402
    BF16_TOL,
    GRIDS,
    build,
    fmt,
    graph_ms,
    load_generated,
    median_ms,
    rel,
)
from benchmarks.revisions import revision_line, revision_meta  # noqa: E402

SHAPES = [(384, 3136, 8), (384, 25600, 1), (384, 102400, 1)]


def kernel_table(fn, device: torch.device, iters: int = 5, top: int = 12) -> list[dict]:
    """Device (or, on the CPU, self CPU) time per call of fn, per kernel, largest first."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    fn()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        us = ev.self_device_time_total if device.type == "cuda" else ev.self_cpu_time_total
        if us > 0 and (device.type != "cuda" or ev.device_type == torch.autograd.DeviceType.CUDA):
            rows.append({"kernel": ev.key, "calls": ev.count / iters, "us": us / iters})
    rows.sort(key=lambda r: -r["us"])
    return rows[:top]


def profile_form(mod, c: int, n: int, batch: int, form: str, device, dtype) -> dict:
    os.environ["PADRE_TRITON_CONV"] = form
    _, fused = build(mod, c, n, device, dtype)
    x = torch.randn(batch, n, c, device=device, dtype=dtype)
    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)

    def forward():
        with torch.no_grad():
            return fused(x)

    def train():
        xg.grad = None
        fused(xg).backward(g)

    out = {"C": c, "N": n, "batch": batch, "form": form,
           "launch_ms": median_ms(forward, device), "graph_ms": graph_ms(forward, device),
           "kernels": kernel_table(forward, device), "train_kernels": kernel_table(train, device)}
    print(f"C={c} N={n} B={batch} {form:8s}: forward {out['launch_ms']:.3f} ms as called, "
          f"{out['graph_ms'] or float('nan'):.3f} ms from a CUDA graph", flush=True)
    for r in out["kernels"][:8]:
        print(f"    {r['us']:9.1f} us  x{r['calls']:.0f}  {r['kernel'][:120]}", flush=True)
    return out


SWEEP_SHAPES = [(384, 3136, 8), (384, 25600, 1)]
# (BC, BH) x num_warps x (num_stages, STRIP_CACHE) of the Toeplitz forward, BW/BK/HALO as
# the default picks
SWEEP_TILES = [(4, 64), (4, 128), (8, 32), (8, 64), (16, 32), (16, 64)]
# the row taps' strips overlap in BH - 1 of BH rows: 1 stage issues plain 16-byte loads that
# may hit L1; ".ca" makes the pipelined asynchronous copies allocate in L1 (the default ones,
# cp.async.cg, bypass it). 4 stages, never the fastest on the H200 (gpu_profile.md at
# 2ef9146) and out of shared memory at BC = 16, are left out
SWEEP_PIPELINES = ((1, ""), (2, ""), (3, ""), (2, ".ca"), (3, ".ca"))
# tiles also swept with the band gathered from the taps in the kernel (BAND_FROM_TAPS)
SWEEP_BAND_TILES = [(8, 64)]
# tiles also swept with the strips from one slab per program (SLAB), at 2 and 3 stages (its
# slab is one plain load: no ".ca" copies): (BC, BH, PARTS), the strip's columns whole or in
# two parts
SWEEP_SLAB_TILES = [(8, 32, 1), (8, 64, 1), (16, 32, 1), (8, 64, 2)]


def strip_cache_ignored(same_code: dict) -> bool:
    """Whether the first launches found the ".ca" strip copies compiled to the default's code
    (toeplitz.SAME_CODE: Triton 3.6.0 issues them as cp.async.cg all the same)."""
    return any(cfg.get("STRIP_CACHE") == ".ca" and dict(cfg, STRIP_CACHE="") == same_as
               for pairs in same_code.values() for cfg, same_as in pairs)


def tile_sweep(mod, device, dtype, smoke: bool, save=lambda results: None) -> list[dict]:
    """The 3C-wide conv alone (channel-major input, as gpu.py times it) on each tile of
    SWEEP_TILES x {4, 8} warps x SWEEP_PIPELINES (and SWEEP_BAND_TILES so with the band
    gathered from the taps, SWEEP_SLAB_TILES with the strips from one slab), beside cuDNN's
    depthwise conv (NCHW, the same bytes) as a baseline; ".ca" strips are left out where the
    installed Triton ignores them (the same code as the default, so the same time). A tile
    that fails to compile or launch is recorded as such, and so is one whose output is off
    the default tiles' (sweep_shape); `save` gets the results after each tile (a time limit
    may end the sweep). Each shape's tiles are compiled together before the first is
    timed."""
    os.environ["PADRE_TRITON_CONV"] = "toeplitz"
    real = mod.dwconv_toeplitz_configs
    skip_ca = strip_cache_ignored(getattr(mod, "SAME_CODE", {}))
    grid = [{"BC": bc, "BH": bh, "num_warps": warps, "num_stages": stages,
             "STRIP_CACHE": cache, "BAND_FROM_TAPS": band, "SLAB": slab, "PARTS": parts}
            for band, slab, tiles, pipelines in (
                (False, False, [(*t, 1) for t in SWEEP_TILES], SWEEP_PIPELINES),
                (True, False, [(*t, 1) for t in SWEEP_BAND_TILES], SWEEP_PIPELINES),
                (False, True, SWEEP_SLAB_TILES, ((2, ""), (3, ""))))
            for bc, bh, parts in tiles for warps in (4, 8) for stages, cache in pipelines
            if not (skip_ca and cache == ".ca")]
    results = []
    try:
        for c3, n, batch in [(96, 196, 1)] if smoke else [(3 * c, n, b)
                                                           for c, n, b in SWEEP_SHAPES]:
            done = list(results)
            results += sweep_shape(mod, real, c3, n, batch, grid[:2] if smoke else grid,
                                   device, dtype, lambda rows, done=done: save(done + rows))
            save(results)
    finally:
        mod.dwconv_toeplitz_configs = real
        os.environ.pop("PADRE_TRITON_CONV", None)
    return results


def sweep_shape(mod, real, c: int, n: int, batch: int, grid, device, dtype,
                save=lambda results: None) -> list[dict]:
    """One shape of tile_sweep: cuDNN's time, then each tile of `grid`'s, where its output
    is within BF16_TOL (relative to the largest) of the default tiles' (`err_vs_default`;
    else it is marked `disagrees` and not timed). The default tiles' own output is compared
    with cuDNN's (`err_vs_cudnn` of the cuDNN row). `save` gets this shape's results so far
    after each tile."""
    import torch.nn.functional as F

    h, w = GRIDS[n]
    x = torch.randn(batch, c, n, device=device, dtype=dtype)  # [B, C, N]: channel-major
    weight = torch.randn(c, 11, 11, device=device, dtype=dtype)
    bias = torch.randn(c, device=device, dtype=dtype)

    def cudnn():
        return F.conv2d(x.view(batch, c, h, w), weight[:, None], bias, padding=5, groups=c)

    def conv():  # z, [B, N, C]
        return mod.dwconv_hadamard(x.mT, weight, bias, None, None, None, None, h, w, 5, 5, True,
                                   False)[0]

    def on(tiles: dict):  # the Toeplitz forward's configs: the default's, with `tiles` set
        return lambda *a, **k: [dict(real(*a, **k)[0], **tiles)]

    mod.dwconv_toeplitz_configs = on({})
    reference = conv()  # the default tiles' output, which every tile is held to
    cudnn_err = rel(reference.mT.reshape(batch, c, h, w), cudnn())
    results = [{"C": c, "N": n, "batch": batch, "tiles": "cudnn",
                "ms": median_ms(cudnn, device), "err_vs_cudnn": cudnn_err}]
    print(f"sweep C={c} N={n} B={batch}: cuDNN depthwise {results[0]['ms']:.3f} ms (the "
          f"default tiles' output off cuDNN's by {cudnn_err:.1e})", flush=True)

    # every tile compiled at once first (the kernels' compile_together, as a first launch
    # does): one call whose first launch is handed them all, the timings below then compile
    # nothing; a tile that fails fails again in its own timing
    fastest = mod.fastest
    mod.dwconv_toeplitz_configs = lambda *a, **k: [dict(real(*a, **k)[0], **t) for t in grid]
    mod.fastest = lambda key, configs, launch: mod.compile_together(configs, launch) or configs[0]
    try:
        conv()
    except Exception:
        pass
    finally:
        mod.fastest = fastest
    for tiles in grid:
        mod.dwconv_toeplitz_configs = on(tiles)
        result = {"C": c, "N": n, "batch": batch, "tiles": tiles, "ms": None}
        try:
            result["err_vs_default"] = rel(conv(), reference)
            if result["err_vs_default"] < BF16_TOL:
                result["ms"] = median_ms(conv, device, samples=7)
            else:
                result["disagrees"] = True
        except Exception as err:  # out of shared memory, say: recorded, the sweep goes on
            result["tiles"] = dict(tiles, error=repr(err)[:200])
        results.append(result)
        save(results)
        verdict = (f"{result['ms']:.3f} ms" if result["ms"] is not None else
                   f"off the default tiles by {result['err_vs_default']:.1e}, not timed"
                   if result.get("disagrees") else "failed")
        print(f"    {tiles}: {verdict}", flush=True)
    return results


def _swept(r: dict) -> str:
    """A sweep row's time, or why it has none."""
    if r.get("disagrees"):
        return f"wrong ({r['err_vs_default']:.1e} off the default)"
    return "failed" if r["ms"] is None else format(r["ms"], ".3f")


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Where padre3's time goes on {meta['device']} (bf16)", "",
             f"Command: `{meta['command']}`; torch {meta['torch']}, triton {meta['triton']}.", "",
             revision_line(meta), "",
             "| C | N | batch | form | forward as called, ms | from a CUDA graph, ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        graph = "-" if r["graph_ms"] is None else f"{r['graph_ms']:.3f}"
        lines.append(f"| {r['C']} | {r['N']} | {r['batch']} | {r['form']} "
                     f"| {r['launch_ms']:.3f} | {graph} |")
    if meta.get("errors"):
        lines += ["", "Rows that failed (not timed): " + "; ".join(meta["errors"])]
    if meta.get("same_code"):
        lines += ["", "First-launch candidates compiled to an earlier candidate's machine code "
                  "(not timed; the sweep leaves out \".ca\" strips where these include them): "
                  + "; ".join(f"{r['tiles']} = {r['same_as']}" for r in meta["same_code"])]
    if meta.get("sweep"):
        lines += ["", "Tile sweep: the 3C-wide 11x11 conv alone (channel-major input), ms "
                  "(median of CUDA-event timings), fastest first per shape; cuDNN's depthwise "
                  "conv on the same NCHW tensor as a baseline. Error: each tile's output "
                  "against the default tiles' (the cuDNN row: the default tiles' against "
                  f"cuDNN's), relative to the largest; a tile {BF16_TOL:g} or more off is "
                  "wrong, not timed:", "",
                  "| C | N | batch | tiles | ms | error |", "|---|---|---|---|---|---|"]
        ordered = sorted(meta["sweep"], key=lambda r: (r["N"], r["ms"] is None, r["ms"] or 0))
        lines += [f"| {r['C']} | {r['N']} | {r['batch']} | {r['tiles']} | {_swept(r)} "
                  f"| {fmt(r.get('err_vs_default', r.get('err_vs_cudnn')), '.1e')} |"
                  for r in ordered]
    for r in rows:
        for part in ("kernels", "train_kernels"):
            title = "forward" if part == "kernels" else "forward + backward"
            lines += ["", f"{title}, C={r['C']} N={r['N']} batch={r['batch']} {r['form']}: "
                      "device time per call (us), calls per call, kernel", "",
                      "| us | calls | kernel |", "|---|---|---|"]
            lines += [f"| {k['us']:.1f} | {k['calls']:.0f} | `{k['kernel'][:160]}` |"
                      for k in r[part]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU dry run at tiny sizes")
    ap.add_argument("--forms", nargs="+", default=["toeplitz", "slab", "direct"])
    ap.add_argument("--no-sweep", dest="sweep", action="store_false",
                    help="skip the Toeplitz tile sweep (about a minute on an H200)")
    args = ap.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: run with --smoke for a CPU dry run")
        return 2
    out = Path(os.environ.get("OUT") or (tempfile.mkdtemp(prefix="padre_profile_smoke_")
                                         if args.smoke else ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True  # cuDNN's fastest depthwise algorithm, as gpu.py
    mod = load_generated("padre3")
    import triton

    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "triton": triton.__version__,
            "command": " ".join(["python benchmarks/gpu_profile.py", *sys.argv[1:]]),
            **revision_meta(ROOT)}
    dtype = torch.float32 if args.smoke else torch.bfloat16
    shapes = [(32, 196, 1)] if args.smoke else SHAPES
    rows: list[dict] = []

    def save(sweep: list[dict] | None = None) -> None:  # after each row and phase: a limit
        if sweep is not None:                         # or a failure may end the run
            meta["sweep"] = sweep
        meta["toeplitz_tiles"] = [{"key": [str(part) for part in key], "tiles": cfg}
                                  for key, cfg in mod.TUNED.items()]
        meta["same_code"] = [{"key": [str(part) for part in key], "tiles": cfg,
                              "same_as": other}
                             for key, pairs in getattr(mod, "SAME_CODE", {}).items()
                             for cfg, other in pairs]
        (out / "gpu_profile.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                         indent=1))
        (out / "gpu_profile.md").write_text(markdown(meta, rows))

    for c, n, b in shapes:
        for form in args.forms:
            try:
                rows.append(profile_form(mod, c, n, b, form, device, dtype))
            except Exception as err:  # recorded; the other rows and the sweep go on
                traceback.print_exc()
                meta.setdefault("errors", []).append(f"C={c} N={n} batch={b} {form}: "
                                                     f"{err!r}"[:400])
            finally:
                os.environ.pop("PADRE_TRITON_CONV", None)
            save()
    for tuned in meta["toeplitz_tiles"]:
        print("tiles", tuned["tiles"], "for x", tuned["key"][4], "weight", tuned["key"][8])
    if args.sweep:
        tile_sweep(mod, device, dtype, args.smoke, save)
    print(f"wrote {out}/gpu_profile.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
