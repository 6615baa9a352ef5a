"""Times the CAOTE score kernels at decode shapes: the token axis split over S chunks a row
(`caote.kernel.token_split`) against the same kernels with one chunk a row (B * Hq programs)
and against the PyTorch twin, on one GPU:

    python benchmarks/caote_split.py            # CUDA: writes $OUT/caote_split.md
    python benchmarks/caote_split.py --smoke    # CPU dry run in the interpreter (tiny sizes)

Shapes: B = 1 and Llama-3-8B's heads (32 query heads on 8 KV heads of 128 channels), bf16
values, fp32 softmax weights, T in TOKENS. Each time is the median of triton.testing.do_bench
(CUDA events); each shape's kernels are checked against the float64 twin before they are
timed. Results go to $OUT (default benchmarks/results/) as a markdown table with the device
and versions, rewritten after every row; the exit status is 1 where a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "--smoke" in sys.argv:  # before the kernels are made: Triton reads it at @triton.jit
    os.environ["TRITON_INTERPRET"] = "1"

from benchmarks.revisions import revision_line, revision_meta  # noqa: E402
from padre_compiler.caote import kernel  # noqa: E402
from padre_compiler.caote.scores import caote_from_weights  # noqa: E402

TOKENS = (4096, 32768, 131072)
CHECK = 1e-4  # fp32 sums of 128k terms round far below it; a kernel bug lands far above
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


@contextlib.contextmanager
def one_chunk_a_row() -> Iterator[None]:
    """caote_scores_fused with S = 1: every row's tokens in one chunk."""
    split = kernel.token_split
    tile = kernel.CAOTE_TILE["BT"]
    kernel.token_split = lambda t, rows, device: (1, -(-t // tile) * tile)
    try:
        yield
    finally:
        kernel.token_split = split


def inputs(t: int, device: torch.device, heads: int, kv_heads: int, d: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(t)
    logits = torch.randn(1, heads, t, generator=gen, device=device) * 3
    values = torch.randn(1, kv_heads, t, d, generator=gen, device=device)
    return logits.softmax(-1), values.to(torch.bfloat16 if device.type == "cuda"
                                         else torch.float16)


def median_ms(fn: Callable[[], object], smoke: bool) -> float:
    """Median ms of fn() by triton.testing.do_bench (CUDA events around each call, so a call's
    host work counts: allocations and three launches); NaN in the interpreter (not timed)."""
    if smoke:
        return float("nan")
    import triton.testing

    return triton.testing.do_bench(fn, warmup=5, rep=50, return_mode="median")


def row(t: int, device: torch.device, smoke: bool) -> dict:
    """One shape: both kernel launches and the fp32 twin checked against the float64 twin
    (error: the largest difference over the largest score), then timed where the kernels
    pass (CHECK)."""
    heads, kv_heads, d = (4, 2, 16) if smoke else (HEADS, KV_HEADS, HEAD_DIM)
    w, v = inputs(t, device, heads, kv_heads, d)
    chunks, _ = kernel.token_split(t, heads, device)
    exact = caote_from_weights(w.double(), v.double())  # fp64 sums: the fp32 twin's are not
    scale = exact.abs().max().item()

    def error(got: torch.Tensor) -> float:
        return (got.double() - exact).abs().max().item() / scale

    split = error(kernel.caote_scores_fused(w, v))
    with one_chunk_a_row():
        whole = error(kernel.caote_scores_fused(w, v))
    found = {"tokens": t, "heads": heads, "kv_heads": kv_heads, "chunks": chunks,
             "split_error": split, "one_chunk_error": whole,
             "twin_error": error(caote_from_weights(w, v)), "passed": max(split, whole) < CHECK}
    nan = float("nan")
    found["split_ms"] = median_ms(lambda: kernel.caote_scores_fused(w, v), smoke) \
        if found["passed"] else nan
    with one_chunk_a_row():
        found["one_chunk_ms"] = median_ms(lambda: kernel.caote_scores_fused(w, v), smoke) \
            if found["passed"] else nan
    found["twin_ms"] = median_ms(lambda: caote_from_weights(w, v), smoke)
    return found


def markdown(device: str, rows: list[dict], smoke: bool) -> str:
    timing = ("fp16 values; not timed (the interpreter)" if smoke else
              "bf16 values; medians of triton.testing.do_bench, each call's host work "
              "(allocations, launches) included")
    lines = ["# CAOTE score kernels at decode: tokens split over programs", "",
             "Command: `python benchmarks/caote_split.py`  ", revision_line(revision_meta(ROOT)),
             "", f"{device}; torch {torch.__version__}; B = 1, {rows[0]['heads']} query heads "
             f"on {rows[0]['kv_heads']} KV heads, {timing}. Errors: against the float64 twin, "
             f"the largest difference over the largest score; the kernels must be within "
             f"{CHECK:g} to be timed.", "",
             "| tokens | chunks a row | error: split, one chunk, fp32 twin | split ms "
             "| one chunk ms | twin ms | speed-up of the split over one chunk | over the twin |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(v: float, unit: str = "") -> str:
        return "-" if v != v else f"{v:.3f}{unit}"  # NaN: not timed

    for r in rows:
        errors = ", ".join(f"{r[k]:.1e}" for k in ("split_error", "one_chunk_error",
                                                    "twin_error"))
        lines.append(f"| {r['tokens']:,} | {r['chunks']} | {errors}"
                     f"{'' if r['passed'] else ' (failed)'} | {cell(r['split_ms'])} | "
                     f"{cell(r['one_chunk_ms'])} | {cell(r['twin_ms'])} | "
                     f"{cell(r['one_chunk_ms'] / r['split_ms'], 'x')} | "
                     f"{cell(r['twin_ms'] / r['split_ms'], 'x')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU dry run at tiny sizes")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for a CPU dry run")
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    out = Path(os.environ.get("OUT") or (tempfile.mkdtemp(prefix="padre_caote_smoke_")
                                         if args.smoke else ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    name = "CPU (Triton interpreter)" if args.smoke else torch.cuda.get_device_name()
    rows: list[dict] = []
    for t in (100, 300) if args.smoke else TOKENS:  # the table rewritten after every row
        rows.append(row(t, device, args.smoke))
        (out / "caote_split.md").write_text(markdown(name, rows, args.smoke))
        print(markdown(name, rows[-1:], args.smoke).splitlines()[-1], flush=True)
    return 0 if all(r["passed"] for r in rows) else 1

if __name__ == "__main__":
    raise SystemExit(main())
