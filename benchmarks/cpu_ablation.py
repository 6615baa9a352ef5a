"""CPU ablation (fp32, C = 384): which torch-backend passes pay for padre3, and how much of the
time is the allocator's page faults.

    .venv/bin/python benchmarks/cpu_ablation.py          # writes benchmarks/results/cpu_ablation.md

Times padre3 compiled with the full pass pipeline, without fuse_siblings (the torch default),
without fuse_scaled_sum, and without both, against the hand-written module, in random order
(medians). Then, in a child process, the same with glibc's trim and mmap thresholds raised
(mallopt), so freed temporaries are reused instead of returned to the kernel and faulted in
again.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import allocator  # noqa: E402
from benchmarks.handwritten import HandwrittenPadre3  # noqa: E402
from padre_compiler.backends.pytorch import emit_module  # noqa: E402
from padre_compiler.compiler import load_source, optimise, pass_context  # noqa: E402
from padre_compiler.passes import PIPELINE  # noqa: E402
from padre_compiler.spec.loader import load_spec  # noqa: E402

SIZES = [(196, (14, 14), 16), (3136, (56, 56), 1)]
VARIANTS = {
    "all passes": PIPELINE,
    "no fuse_siblings (torch default)": tuple(p for p in PIPELINE if p != "fuse_siblings"),
    "no fuse_scaled_sum": tuple(p for p in PIPELINE if p != "fuse_scaled_sum"),
    "neither": tuple(p for p in PIPELINE if p not in ("fuse_siblings", "fuse_scaled_sum")),
}


def module_class(passes: tuple[str, ...], tag: str, grid: tuple[int, int]) -> type:
    spec = load_spec("padre3")
    g, _ = optimise(spec, pass_context(spec, 384, grid), passes)
    source = emit_module(g, g.decls, name="padre3", header=f"padre3 ({tag})")
    return load_source(source, "padre3_ablation").Padre3


def measure(repeats: int = 25) -> list[str]:
    random.seed(0)
    rows = []
    for n, grid, batch in SIZES:
        torch.manual_seed(0)
        hand = HandwrittenPadre3(384, grid).eval()
        fns = {"hand-written": hand}
        for tag, passes in VARIANTS.items():
            module = module_class(passes, tag, grid)(384, grid).eval()
            module.load_state_dict(hand.to_spec_state_dict())
            fns[tag] = module
        x = torch.randn(batch, n, 384)
        times: dict[str, list[float]] = {k: [] for k in fns}
        with torch.no_grad():
            for fn in fns.values():
                fn(x)
            for _ in range(repeats):
                order = list(fns.items())
                random.shuffle(order)
                for k, fn in order:
                    t0 = time.perf_counter()
                    fn(x)
                    times[k].append(time.perf_counter() - t0)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows += [f"| {n} | {batch} | {k} | {v:.2f} | {ms['hand-written'] / v:.2f}x |"
                 for k, v in ms.items()]
    return rows


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    if allocator.apply_from_env():
        print("\n".join(measure()))
        return
    default = measure()
    tuned = allocator.rerun_tuned(__file__, []).strip().split("\n")
    head = ["| N | batch | module | ms (median) | hand-written / module |", "|---|---|---|---|---|"]
    text = "\n".join([
        "# padre3 on CPU: pass ablation and allocator", "",
        "Command: `python benchmarks/cpu_ablation.py`  ",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, C = 384.", "",
        "## glibc malloc defaults", "", *head, *default, "",
        "## glibc trim and mmap thresholds raised to 1 GiB (mallopt)", "", *head, *tuned, ""])
    out = ROOT / "benchmarks" / "results" / "cpu_ablation.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
