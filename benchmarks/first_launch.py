"""Compile time of a first launch: the candidates one after another, or all at once.

    .venv/bin/python benchmarks/first_launch.py [--triton-version 3.6.0] [--repeats 3]
    # writes benchmarks/results/first_launch[_triton-V].{md,json,png}

On a GPU the first launch of each shape times every candidate tile of the Toeplitz forward
(`fastest`), and compiles each before timing it (the table gives their number). This
measures that compile, for sm_90 on this machine's CPUs (`aot.jit_for_sm`: the JIT compiles,
nothing launches; the timings, which need a GPU, are stubbed), on padre3's 3C-wide conv (the
dense map's bias folded in, 56 x 56 grid, bf16, channel-major input), in two modes:
- `one after another`: each candidate compiled at its first launch (`compile_together`
  disabled, as on a Triton without its async compile mode);
- `together`: `compile_together`, every candidate compiled on a thread pool before the first
  is timed (the generated modules' path).
Each run is a fresh process with an empty Triton cache; the modes take turns, and the figure is
the ratio of their medians. Both modes must compile the same machine code per candidate.
The JIT's kernels also check aot.compile_kernel's premise (it compiles as the JIT specialises
a launch): at 56 x 56 and at CHECK_GRIDS, each candidate compiled by aot with the same
constexprs must have the JIT kernel's registers, spills, shared memory and SASS census.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
SOURCE = ROOT / "codegen" / "triton" / "padre3.py"
MODES = {"one after another": False, "together": True}
C, GRID, TAPS = 3 * 384, (56, 56), 11  # padre3's 3C-wide conv at 3,136 tokens
CHECK_GRIDS = ((28, 28), (14, 14))  # and 784, 196 tokens: 4- and 2-aligned strips (aot premise)
KERNEL = "dwconv_toeplitz_fwd_kernel"
# the constexprs dwconv_hadamard_launch passes for that conv besides the tiles and the kernels'
# TOEPLITZ_FWD_DEFAULTS, and the stride the JIT specialises as the constant 1 (x
# channel-major): what aot.compile_kernel compiles it with
LAUNCH_FLAGS = dict(KH=TAPS, KW=TAPS, PH=TAPS // 2, PW=TAPS // 2, HAS_BIAS=True,
                    HAS_GATE=False, HAS_ACC=False, HAS_ACC_SCALE=False, HAS_SCALE=False,
                    STORE_Z=True, STORE_O=False, STORE_U=False, HAS_IN_BIAS=True, KP=16,
                    s_xn=1)


def first_launch(together: bool, candidates: int | None = None,
                 grid: tuple[int, int] = GRID) -> dict:
    """In this process (no TRITON_INTERPRET): padre3's 3C conv launched once in COMPILING mode
    on `grid` with a GPU's candidate list (its first `candidates`): the seconds it took, the
    compiles made in the main thread and on the pool, the compiled kernels' cubin digests
    (sorted), the strips' alignment, and per candidate its tiles and what aot.resources_of
    reads from the kernel the JIT compiled."""
    import importlib.util

    import torch
    import triton

    from padre_compiler.backends.triton import aot

    spec = importlib.util.spec_from_file_location("first_launch_padre3", SOURCE)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    if m.INTERPRETED:
        raise RuntimeError("first_launch needs a process without TRITON_INTERPRET=1")
    on_gpu = m.dwconv_toeplitz_configs
    m.dwconv_toeplitz_configs = lambda c, kw, gpu, **kw_: on_gpu(c, kw, True, **kw_)[:candidates]
    triton.testing.do_bench = lambda fn, **_: 1.0  # nothing can run: every candidate ties
    if not together:
        m.compile_together = lambda configs, launch: None
    threads, compile_one = [], triton.compiler.compile  # the JIT's: note each call's thread
    triton.compiler.compile = lambda *a, **k: threads.append(
        threading.current_thread()) or compile_one(*a, **k)
    timed, code_of = [], m.machine_code  # fastest asks it for each candidate's kernel, in order
    m.machine_code = lambda handle: timed.append(handle) or code_of(handle)
    h, w = grid
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, C, h * w, generator=gen).mT.to(torch.bfloat16)  # channel-major
    weight = torch.randn(C, TAPS, TAPS, generator=gen).to(torch.bfloat16)
    bias, in_bias = torch.zeros(C, dtype=torch.bfloat16), torch.ones(C, dtype=torch.bfloat16)
    z = torch.empty(1, h * w, C, dtype=torch.bfloat16)
    align = m.strip_alignment(x, w)
    configs = m.dwconv_toeplitz_configs(C, TAPS, True, rows=h, pad_w=TAPS // 2, align=align,
                                        kh=TAPS)
    token = m.COMPILING.set(True)
    try:
        with aot.jit_for_sm(90):
            t0 = time.perf_counter()
            m.dwconv_hadamard_launch(x, weight, bias, None, None, None, None, h, w,
                                     TAPS // 2, TAPS // 2, z, None, in_bias=in_bias)
            seconds = time.perf_counter() - t0
    finally:
        m.COMPILING.reset(token)
    if len(timed) != len(configs):
        raise RuntimeError(f"{len(configs) - len(timed)} candidates failed to compile")
    kernels = list(getattr(m, KERNEL).device_caches[0][0].values())
    main = sum(t is threading.main_thread() for t in threads)
    jit = [{"tiles": cfg, "constexprs": {**LAUNCH_FLAGS, **m.TOEPLITZ_FWD_DEFAULTS,
                                         **aot.constexprs_of(cfg)},
            **resources(aot.resources_of(kernel, KERNEL, cfg, 0.0, trips=(TAPS,)))}
           for cfg, kernel in zip(configs, timed, strict=True)]
    return {"seconds": seconds, "candidates": len(configs), "kernels": len(kernels),
            "compiled_in_main_thread": main, "compiled_in_pool": len(threads) - main,
            "digests": sorted(hashlib.sha256(k.asm["cubin"]).hexdigest()[:16] for k in kernels),
            "jit": jit, "grid": grid, "align": align, "triton": triton.__version__,
            "threads": os.cpu_count()}


def resources(r) -> dict:
    """What the census reads from a compiled Toeplitz forward (an aot.Resources): registers,
    spills, shared memory and warp instructions per output by class."""
    cfg = r.config
    return {"registers": r.registers, "stack": r.stack, "shared": r.shared,
            "per_output": r.census.per(cfg["BC"] * cfg["BH"] * cfg["BW"])}


def disagreements(jit: list[dict], triton_path: Path | None = None) -> list[str]:
    """The candidates whose kernel, as the JIT compiled it (first_launch's "jit"), differs from
    aot.compile_kernel's of the same constexprs: aot's premise (it compiles as the JIT
    specialises a launch), checked; one compile per CPU at a time."""
    from padre_compiler.backends.triton import aot

    def differs(row: dict) -> str | None:
        cfg = row["tiles"]
        got = resources(aot.compile_kernel(
            SOURCE, KERNEL, row["constexprs"], num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"], trips=(TAPS,), triton_path=triton_path))
        want = {k: row[k] for k in got}
        return None if got == want else f"{cfg}: aot {got}, JIT {want}"

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return [d for d in pool.map(differs, jit) if d]


def run_child(together: bool, candidates: int | None = None,
              triton_path: Path | None = None, grid: tuple[int, int] = GRID) -> dict:
    """first_launch in a fresh process with an empty Triton cache (and `triton_path`'s Triton
    first on the path, from aot.triton_release)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["PADRE_TRITON_CONV"] = "toeplitz"  # a compile error raises: no fallback to direct
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (
        str(triton_path) if triton_path else None, str(ROOT), env.get("PYTHONPATH"))))
    request = json.dumps({"together": together, "candidates": candidates, "grid": grid})
    with tempfile.TemporaryDirectory() as cache:
        proc = subprocess.run([sys.executable, __file__, "--child", request], env=dict(
            env, TRITON_CACHE_DIR=cache), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"first launch ({request}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for i, (mode, rows) in enumerate(runs.items()):
        secs = [r["seconds"] for r in rows]
        ax.bar(i, statistics.median(secs), color=f"C{i}", label=mode)
        ax.plot([i] * len(secs), secs, "k.", ms=4)
    ax.set_xticks(range(len(runs)), list(runs))
    ax.set_ylabel("first launch, s (compile only)")
    ax.set_title(f"padre3 3C conv: {rows[0]['candidates']} Toeplitz candidates, "
                 f"Triton {rows[0]['triton']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triton-version", help="compile with this Triton release (pip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(first_launch(**json.loads(args.child))))
        return
    from padre_compiler.backends.triton import aot

    if not aot.available():
        sys.exit("Triton with its NVIDIA backend (cuobjdump) is needed: pip install '.[triton]'")
    release = aot.triton_release(args.triton_version) if args.triton_version else None
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode, together in MODES.items():
            runs[mode].append(run_child(together, triton_path=release))
            print(f"{mode}: {runs[mode][-1]['seconds']:.1f} s", flush=True)
    digests = {mode: {tuple(r["digests"]) for r in rows} for mode, rows in runs.items()}
    if len({d for ds in digests.values() for d in ds}) != 1:
        sys.exit(f"the modes compiled different machine code: {digests}")
    first = runs["together"][0]
    checks = [first] + [run_child(True, triton_path=release, grid=g) for g in CHECK_GRIDS]
    differ = [disagreements(row["jit"], release) for row in checks]
    med = {mode: statistics.median(r["seconds"] for r in rows) for mode, rows in runs.items()}
    stem = "first_launch" + (f"_triton-{args.triton_version}" if release else "")
    lines = ["# First launch's compile: candidates one after another vs together", "",
             "Command: `python benchmarks/first_launch.py " + " ".join(sys.argv[1:]) + "`  ",
             f"Triton {first['triton']}, sm_90 on this machine's {first['threads']} CPU threads "
             f"(nothing launched); padre3's 3C conv ({C} channels, {GRID[0]} x {GRID[1]}, "
             f"{TAPS} x {TAPS}, bf16): {first['candidates']} candidates, {first['kernels']} "
             f"kernels compiled ({len(set(first['digests']))} distinct cubins), the same "
             f"machine code in both modes; fresh cache each run, median of {args.repeats}.", "",
             "aot.compile_kernel's premise, checked: compiling the same constexprs, it gives "
             "each candidate the registers, spills, shared memory and SASS census per output "
             "of the JIT's kernel for the launch on real tensors:", "",
             "| grid | strips aligned to | candidates | aot = JIT | differing |",
             "|---|---|---|---|---|",
             *(f"| {r['grid'][0]} x {r['grid'][1]} | {r['align']} | {len(r['jit'])} "
               f"| {len(r['jit']) - len(d)} | {'; '.join(d) or '-'} |"
               for r, d in zip(checks, differ, strict=True)), "",
             "| mode | seconds (each run) | median s | x faster |", "|---|---|---|---|"]
    for mode, rows in runs.items():
        each = ", ".join(f"{r['seconds']:.1f}" for r in rows)
        lines.append(f"| {mode} | {each} | {med[mode]:.1f} | "
                     f"{med['one after another'] / med[mode]:.2f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(runs, indent=2))
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(runs, OUT / f"{stem}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
