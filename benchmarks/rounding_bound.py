"""How much of each output the fuzzer's rule holds to the rounding bound rather than to the
eager twin, how loose that bound is, for the specs with normalisations:

    python benchmarks/rounding_bound.py           # writes benchmarks/results/rounding_bound.md
    python benchmarks/rounding_bound.py --smoke   # 3 examples a row, into $OUT or a temp dir

Each row draws EXAMPLES examples as `padre fuzz` does (widths of 1-3 channels a head, 1-17
tokens, batch 1-3, weights around their init, x ~ N(0, 1)) and reports:
- held to the bound: the share of output elements downstream of an undecided normalisation,
  over all examples, and the largest share in one example;
- examples: how many held some;
- the bound there, carried past the undecided rows (rounding.UNIT_VECTORS_APART), as a share
  of the example's max|reference|: its median (the error such an element may have and pass);
- slack: |eager twin - reference| / bound, its median and largest over the elements the rule
  compares with the twin, and its largest over those held to the bound (at most 1 where the
  bound holds; far below 1 where it is loose).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.revisions import revision_line, revision_meta  # noqa: E402
from padre_compiler.backends.reference import run_graph  # noqa: E402
from padre_compiler.ir.graph import is_valid_dim, width_step  # noqa: E402
from padre_compiler.ir.ops import EvalContext  # noqa: E402
from padre_compiler.spec.loader import load_spec  # noqa: E402
from padre_compiler.verify import fuzz  # noqa: E402
from padre_compiler.verify.rounding import undecided  # noqa: E402

CASES = (("castling_vit", {}), ("castling_vit", {"eps": 1e-6}), ("sima", {}))
DTYPES = ("bfloat16", "float16", "float32")
EXAMPLES = 200


def draws(harness: fuzz.Harness, dtype: str, n: int) -> list[fuzz.Example]:
    """n examples of fuzz's sizes in `dtype`, from a fixed seed."""
    rng = np.random.default_rng(0)
    step, found = width_step(harness.graph), []
    while len(found) < n:
        ex = fuzz.Example(step * int(rng.integers(1, 4)), int(rng.integers(1, 18)), None,
                          int(rng.integers(1, 4)), dtype, int(rng.integers(0, 2**31 - 1)))
        if is_valid_dim(harness.graph, ex.dim):
            found.append(ex)
    return found


def measure(harness: fuzz.Harness, dtype: str, n: int) -> dict[str, float]:
    left, total, worst_share, partial, slack, past, past_slack = 0, 0, 0.0, 0, [], [], [0.0]
    for ex in draws(harness, dtype, n):
        x, params = harness.inputs(ex)
        x64, p64 = x.double().numpy(), {k: v.double().numpy() for k, v in params.items()}
        ref = run_graph(harness.graph, x64, p64, EvalContext())
        # the bound carried past undecided rows: a bound at every element, the mask apart
        found = undecided(harness.graph, x64, p64, fuzz.DTYPES[dtype])
        twin = harness.eager(ex, x, params)
        finite = np.isfinite(ref) & np.isfinite(twin)
        held = finite & found.mask  # held to the bound
        left, total = left + int(held.sum()), total + int(finite.sum())
        worst_share = max(worst_share, held.sum() / max(finite.sum(), 1))
        partial += bool(held.any())
        compared = finite & ~found.mask & (found.bound > 0)  # judged by the twin
        slack.extend((np.abs(twin - ref)[compared] / found.bound[compared]).tolist())
        past.extend((found.bound[held] / np.abs(ref[finite]).max()).tolist())
        past_slack.extend((np.abs(twin - ref)[held] / found.bound[held]).tolist())
    return {"share": left / max(total, 1), "worst_share": worst_share, "partial": partial,
            "past": float(np.median(past)) if past else float("nan"),
            "median_slack": float(np.median(slack)), "max_slack": float(np.max(slack)),
            "past_slack": float(np.max(past_slack))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="3 examples a row, into $OUT (default: a temporary folder)")
    args = parser.parse_args()
    n = 3 if args.smoke else EXAMPLES
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp()) if args.smoke else \
        ROOT / "benchmarks" / "results"
    lines = ["# Elements the output rule holds to the rounding bound, and the bound's slack", "",
             "Command: `python benchmarks/rounding_bound.py`  ", revision_line(revision_meta()),
             "", f"{n} examples a row, drawn as `padre fuzz` draws them (default regime). Held: "
             "downstream of a normalisation the dtype cannot decide, judged against the bound "
             "carried past it rather than against the eager twin; bound there: its median as a "
             "share of the example's max|reference|; slack: |eager twin - reference| / bound, "
             "where the twin judges and where the bound does.", "",
             "| spec | dtype | held to the bound | most in one example | examples with some "
             "| bound there / max abs(ref) | median slack | largest slack | largest slack held |",
             "|---|---|---|---|---|---|---|---|---|"]
    torch.set_num_threads(1)
    for name, params in CASES:
        harness = fuzz.Harness(load_spec(name, params=params), "torch")
        shown = name + "".join(f" {k}={v}" for k, v in params.items())
        for dtype in DTYPES:
            m = measure(harness, dtype, n)
            held = "-" if math.isnan(m["past"]) else f"{m['past']:.2g}"  # "-": none held
            lines.append(f"| {shown} | {dtype} | {m['share']:.1%} | {m['worst_share']:.0%} | "
                         f"{m['partial']} of {n} | {held} | {m['median_slack']:.2g} | "
                         f"{m['max_slack']:.2g} | {m['past_slack']:.2g} |")
            print(lines[-1], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rounding_bound.md").write_text("\n".join(lines) + "\n")
    print(f"written to {out / 'rounding_bound.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
