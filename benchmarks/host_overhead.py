"""Host time of a compiled Triton module's forward, its Triton launches stubbed out.

    .venv/bin/python benchmarks/host_overhead.py [--baseline-rev GIT_REV ...] [--specs ...]
    # writes benchmarks/results/host_overhead.{md,json,png} (other specs than the default
    # ones: host_overhead_<specs>.*)

What a GPU caller pays on the CPU beside the kernels: Python, the custom ops' dispatch, the
launchers' configuration and keys, the torch ops (cat, bmm, the band operand) at a width where
their own work is negligible (dim 8, 8 x 8 grid, batch 1). It runs on any machine: the modules
load under TRITON_INTERPRET=1 with PADRE_TRITON_CONV=toeplitz (the GPU's code path) and every
`*_kernel` is replaced by a launch that does nothing, so the Triton launcher's own cost (about
10-20 us a launch on a GPU host) is not in the figures. Each figure is the median over repeats
of the mean of a burst of calls: forward under torch.no_grad() (as gpu.py times it), with
gradients on (eager autograd: custom_op_caller's autograd.Function), and forward + backward
(a training step, x requiring grad; the stubbed kernels leave the values unset, the host path
is the same). With --baseline-rev the same for the
committed codegen/triton/<spec>.py at each revision, in the same run, all taking turns
burst by burst: the ratios are the figures.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before the generated modules import triton
os.environ["PADRE_TRITON_CONV"] = "toeplitz"

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.revisions import source_at  # noqa: E402

OUT = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
DIM, GRID = 8, (8, 8)


class NoLaunch:
    """Stands in for a Triton kernel: `kernel[grid](*args, **constexprs)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def load(path: Path, label: str, stub=lambda name: NoLaunch()) -> type:
    """The module class generated at `path`, each of its file's kernels replaced by
    `stub(kernel name)`."""
    spec = importlib.util.spec_from_file_location(f"host_{label}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in [n for n in vars(module) if n.endswith("_kernel")]:
        setattr(module, name, stub(name))
    cls = next(v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ ==
               module.__name__)
    return cls


def bursts_us(fns: dict[str, object], burst: int, repeats: int) -> dict[str, float]:
    """Median over `repeats` of the mean time of `burst` calls of each fn, microseconds; the
    fns take turns burst by burst, so the machine's drift reaches all of them alike."""
    for fn in fns.values():
        for _ in range(burst // 4 + 1):
            fn()
    means: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(burst):
                fn()
            means[label].append((time.perf_counter() - t0) / burst * 1e6)
    return {label: statistics.median(ms) for label, ms in means.items()}


def build(path: Path, label: str):
    """The module's forward on a fresh input: (model, x)."""
    cls = load(path, label)
    grid = GRID if "grid" in cls.__init__.__code__.co_varnames else None
    model = cls(DIM, grid) if grid else cls(DIM)
    return model, torch.randn(1, GRID[0] * GRID[1], DIM)


def measure(paths: dict[str, Path], burst: int, repeats: int) -> dict[str, dict[str, float]]:
    """{mode: {version: us}} for the modules at `paths` ({version: path})."""
    built = {version: build(path, version) for version, path in paths.items()}
    fns = {version: (lambda m=m, x=x: m(x)) for version, (m, x) in built.items()}
    with torch.no_grad():
        inference = bursts_us(fns, burst, repeats)

    def step(m, x, g):  # a training step's host side: forward, then backward
        m(x).backward(g)

    steps = {version: functools.partial(step, m, x.detach().requires_grad_(),
                                        torch.ones_like(x))
             for version, (m, x) in built.items()}
    return {"forward, no_grad": inference,
            "forward, gradients on": bursts_us(fns, burst, repeats),
            "forward + backward": bursts_us(steps, burst, repeats)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['spec']}\n{r['mode']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.5))
    xs = range(len(rows))
    versions = [v for v in rows[0] if v not in ("spec", "mode") and not v.startswith("x ")]
    width = 0.8 / len(versions)
    for k, version in enumerate(versions):
        ax.bar([x + k * width for x in xs], [r.get(version, 0) for r in rows], width,
               label=version)
    ax.set_xticks([x + width * (len(versions) - 1) / 2 for x in xs])
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("host us per forward (kernels stubbed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


DEFAULT_SPECS = ("padre3", "sima")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-rev", nargs="+", default=[],
                    help="compare with the codegen committed at these revs (timed together)")
    ap.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.specs:
            paths = {"current": ROOT / "codegen" / "triton" / f"{spec}.py"}
            for rev in args.baseline_rev:
                paths[rev] = source_at(rev, spec, Path(tmp))
            for mode, us in measure(paths, args.burst, args.repeats).items():
                row = {"spec": spec, "mode": mode, **us}
                for rev in args.baseline_rev:  # current's speed-up over the rev
                    row[f"x {rev}"] = us[rev] / us["current"]
                rows.append(row)
                print(row, flush=True)
    command = " ".join(["python benchmarks/host_overhead.py", *sys.argv[1:]])
    lines = ["# Host time per forward, Triton launches stubbed (CPU)", "",
             f"Command: `{command}`; torch {torch.__version__}; dim {DIM}, "
             f"{GRID[0]} x {GRID[1]} grid, batch 1; median of {args.repeats} bursts of "
             f"{args.burst} calls.", ""]
    head = "| spec | mode | current us |" + "".join(
        f" {rev} us | x faster than {rev} |" for rev in args.baseline_rev)
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['spec']} | {r['mode']} | {r['current']:.1f} |" + "".join(
            f" {r[rev]:.1f} | {r[f'x {rev}']:.2f} |" for rev in args.baseline_rev))
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "host_overhead" + ("" if tuple(args.specs) == DEFAULT_SPECS
                              else "_" + "_".join(args.specs))
    (OUT / f"{stem}.json").write_text(json.dumps(
        {"command": command, "torch": torch.__version__, "rows": rows}, indent=1))
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, OUT / f"{stem}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
