"""CPU benchmark (fp32): compiled padre3 vs the hand-written modules vs softmax attention.

    .venv/bin/python benchmarks/cpu_padre3.py            # writes benchmarks/results/cpu_padre3.*

For each token count N (square grids, C = 384) it first checks that the compiled module and the
hand-written ones (benchmarks/handwritten.py: written with care, and as one first writes it)
compute the same function with the same weights (biases and output weights drawn at random,
so a mis-mapped one shows), then times them and attention (medians over repeats in a shuffled
order, in one process, torch threads = cores) and reports ratios, and
the floor: max(FLOPs / measured matmul rate, bytes / measured copy bandwidth) from the graph's
cost rules. It runs twice: with glibc's malloc defaults, then in a child process with freed
memory kept in the process (benchmarks/allocator.py), since page faults on temporaries otherwise
decide a good part of the ratio. In each setting both padre3 modules are also timed under
torch.compile (Inductor, CPU; compile time reported, not timed). Results: markdown tables per
setting, a JSON file and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import padre_compiler as pc  # noqa: E402
from benchmarks import allocator  # noqa: E402
from benchmarks.handwritten import Attention, HandwrittenPadre3, IdiomaticPadre3  # noqa: E402
from padre_compiler.ir.cost import graph_cost  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
GRIDS = {196: (14, 14), 784: (28, 28), 3136: (56, 56), 6400: (80, 80)}


def timed(fn, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def peak_rates() -> tuple[float, float]:
    """Measured fp32 matmul FLOP/s and copy bandwidth (bytes/s) on this machine."""
    a = torch.randn(1024, 1024)
    for _ in range(3):
        a @ a
    t = min(timed(lambda m: m @ m, a) for _ in range(10))
    flops = 2 * 1024**3 / t
    big = torch.randn(64 * 2**20 // 4)
    dst = torch.empty_like(big)
    dst.copy_(big)
    t = min(timed(lambda s: dst.copy_(s), big) for _ in range(10))
    return flops, 2 * big.numel() * 4 / t


def bench(dim: int, n: int, batch: int, repeats: int, rates: tuple[float, float],
          inductor: bool) -> dict:
    grid = GRIDS[n]
    torch.manual_seed(0)
    hand = HandwrittenPadre3(dim, grid).off_init_().eval()
    idiomatic = IdiomaticPadre3(dim, grid).eval()
    idiomatic.load_state_dict(hand.state_dict())
    compiled = pc.compile("padre3", dim=dim, grid=grid).eval()
    compiled.load_state_dict(hand.to_spec_state_dict())
    attn = Attention(dim, num_heads=dim // 64).eval()
    x = torch.randn(batch, n, dim)
    fns = {"compiled": compiled, "handwritten": hand, "idiomatic": idiomatic,
           "attention": attn}
    compile_s = {}
    if inductor:  # torch.compile (Inductor, CPU) of both modules; the compile is not timed
        for key, module in (("compiled_inductor", compiled), ("handwritten_inductor", hand)):
            fns[key] = torch.compile(module)
            t0 = time.perf_counter()
            with torch.no_grad():
                fns[key](x)
            compile_s[key] = time.perf_counter() - t0
    with torch.no_grad():
        ref = hand(x)
        err = max(float((fns[k](x) - ref).abs().max() / ref.abs().max())
                  for k in fns if k not in ("handwritten", "attention"))
        assert err < 1e-4, f"compiled and hand-written padre3 differ at N={n}: {err:.2e}"
        for fn in fns.values():
            fn(x)
        times: dict[str, list[float]] = {k: [] for k in fns}
        order = random.Random(n)
        for _ in range(repeats):  # interleaved in a shuffled order: drift hits all alike
            for k, fn in order.sample(list(fns.items()), len(fns)):
                times[k].append(timed(fn, x))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    cost = graph_cost(compiled.compiled.graph, dim, n)
    floor_ms = max(cost.flops * batch / rates[0], cost.bytes * batch / rates[1]) * 1e3
    return {"tokens": n, "grid": list(grid), "batch": batch, "dim": dim, "ms": ms,
            "max_rel_err": err, "floor_ms": floor_ms,
            "speedup_vs_handwritten": ms["handwritten"] / ms["compiled"],
            "speedup_vs_idiomatic": ms["idiomatic"] / ms["compiled"],
            "compiled_vs_attention": ms["attention"] / ms["compiled"],
            "handwritten_vs_attention": ms["attention"] / ms["handwritten"],
            "fraction_of_floor": floor_ms / ms["compiled"], "inductor_compile_s": compile_s}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def cold_compile_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", "padre3", "-o",
                    os.devnull], check=True, capture_output=True)
    return time.perf_counter() - t0


ALLOCATORS = {"default": "glibc malloc defaults",
              "mallopt": "glibc trim and mmap thresholds raised to 1 GiB (mallopt)"}


def write(runs: dict[str, list[dict]], meta: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cpu_padre3.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
    lines = [
        "# padre3 on CPU (fp32, C = 384)", "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads.  ",
        f"Measured peaks: {meta['peak_gflops']:.1f} GFLOP/s (1024^3 matmul), "
        f"{meta['peak_gbps']:.1f} GB/s (copy).  ",
        f"`padre compile padre3` cold, whole process: {meta['cold_compile_s']:.2f} s.", "",
        "Times are medians in ms; ratios > 1 mean the compiled module is faster. Hand-written:"
        " each conv on a channels-last view, intermediates dropped as used, P accumulated in "
        "place; idiomatic: `x.transpose(1, 2).reshape(B, C, H, W)` into each conv, every "
        "intermediate held (benchmarks/handwritten.py).",
    ]
    for setting, rows in runs.items():
        lines += ["", f"## {ALLOCATORS[setting]}", "", *table(rows)]
        if "compiled_inductor" in rows[0]["ms"]:
            lines += ["", "With torch.compile (Inductor, CPU) of each module, same run:", "",
                      *inductor_table(rows)]
    (OUT / "cpu_padre3.md").write_text("\n".join(lines) + "\n")
    plot(runs)


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| N | grid | batch | compiled | hand-written | idiomatic | attention (SDPA) | "
        "compiled / hand | compiled / idiomatic | "
        "compiled vs attention | hand vs attention | floor ms | fraction of floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tokens']} | {r['grid'][0]}x{r['grid'][1]} | {r['batch']} | "
            f"{r['ms']['compiled']:.2f} | {r['ms']['handwritten']:.2f} | "
            f"{r['ms']['idiomatic']:.2f} | "
            f"{r['ms']['attention']:.2f} | {r['speedup_vs_handwritten']:.2f}x | "
            f"{r['speedup_vs_idiomatic']:.2f}x | "
            f"{r['compiled_vs_attention']:.2f}x | {r['handwritten_vs_attention']:.2f}x | "
            f"{r['floor_ms']:.2f} | {r['fraction_of_floor']:.2f} |")
    return lines


def inductor_table(rows: list[dict]) -> list[str]:
    lines = ["| N | batch | compiled + Inductor | hand-written + Inductor | compiled + Inductor / "
             "hand-written (eager) | compiled + Inductor / hand-written + Inductor | Inductor "
             "compile s (compiled, hand-written) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ms, cs = r["ms"], r["inductor_compile_s"]
        lines.append(
            f"| {r['tokens']} | {r['batch']} | {ms['compiled_inductor']:.2f} | "
            f"{ms['handwritten_inductor']:.2f} | "
            f"{ms['handwritten'] / ms['compiled_inductor']:.2f}x | "
            f"{ms['handwritten_inductor'] / ms['compiled_inductor']:.2f}x | "
            f"{cs['compiled_inductor']:.0f}, {cs['handwritten_inductor']:.0f} |")
    return lines


def plot(runs: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (setting, rows), style in zip(runs.items(), ("-", "--"), strict=False):
        ns = [r["tokens"] for r in rows]
        ax.plot(ns, [r["compiled_vs_attention"] for r in rows], "o" + style,
                label=f"compiled padre3 ({setting})")
        ax.plot(ns, [r["handwritten_vs_attention"] for r in rows], "s" + style,
                label=f"hand-written padre3 ({setting})")
        if "compiled_inductor" in rows[0]["ms"]:
            ax.plot(ns, [r["ms"]["attention"] / r["ms"]["compiled_inductor"] for r in rows],
                    "^" + style, label=f"compiled + Inductor ({setting})")
    rows = runs["default"]
    ax.plot([r["tokens"] for r in rows], [r["ms"]["attention"] / r["floor_ms"] for r in rows],
            ":", label="floor")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens N")
    ax.set_ylabel("speed relative to SDPA attention")
    ax.set_title(f"padre3 vs attention, CPU fp32, C={rows[0]['dim']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "cpu_padre3.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--tokens", type=int, nargs="+", default=list(GRIDS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-inductor", action="store_true",
                        help="skip the torch.compile (Inductor) columns")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tuned = allocator.apply_from_env()
    rates = peak_rates()
    rows = []
    from rich.progress import track

    label = "benchmarking (mallopt)" if tuned else "benchmarking (malloc defaults)"
    for n in track(args.tokens, description=label, disable=tuned):
        rows.append(bench(args.dim, n, max(1, 3136 // n), args.repeats, rates,
                          not args.no_inductor))
    if tuned:
        print(json.dumps(rows))
        return
    runs = {"default": rows,
            "mallopt": json.loads(allocator.rerun_tuned(__file__, sys.argv[1:]))}
    meta = {"command": "python benchmarks/cpu_padre3.py " + " ".join(sys.argv[1:]),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "peak_gflops": rates[0] / 1e9, "peak_gbps": rates[1] / 1e9,
            "cold_compile_s": cold_compile_seconds()}
    write(runs, meta)
    print((OUT / "cpu_padre3.md").read_text())


if __name__ == "__main__":
    main()
