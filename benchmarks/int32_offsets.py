"""Kernels just past their int32 offset thresholds, in Triton's CPU interpreter (which forms
addresses as a GPU does: an int32 product past 2**31 wraps negative), against references
that stay below them. Each case needs about 5 GB of memory and minutes of interpreter time,
so it is a script, not a test.

    TRITON_INTERPRET=1 python benchmarks/int32_offsets.py   # -> benchmarks/results/int32_offsets.md

- CAOTE scores: one head's offset (H - 1) * T * d past 2**31 (the values' head stride times
  the last head); each of the last two heads against the same kernel on that head alone.
- Toeplitz band: the band's (C * KH - 1) * BK * BW past 2**31 (a 33 x 33 kernel: from
  31,776 channels), the tensor-core form forced, against the naive twin in fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("PADRE_TRITON_CONV", "toeplitz")

import torch

import padre_compiler as pc
from padre_compiler.caote.kernel import caote_scores_fused

RESULTS = Path(__file__).parent / "results" / "int32_offsets.md"


def caote_case() -> tuple[str, float]:
    heads, d = 16, 4096
    t = -(-2**31 // ((heads - 1) * d))  # the least T with (H - 1) T d >= 2**31
    gen = torch.Generator().manual_seed(0)
    values = torch.empty(1, heads, t, d, dtype=torch.float16)
    for h in range(heads):
        values[0, h] = torch.randn(t, d, generator=gen).half()
    weights = torch.randn(1, heads, t, generator=gen).softmax(-1)
    full = caote_scores_fused(weights, values)[0]
    err = max((full[h] - caote_scores_fused(weights[:, h:h + 1].contiguous(),
                                            values[:, h:h + 1].contiguous())[0, 0]
               ).abs().nan_to_num(float("inf")).max().item() for h in (heads - 2, heads - 1))
    return (f"CAOTE scores, H = {heads}, d = {d}, T = {t:,} (last head's offset "
            f"{(heads - 1) * t * d:,})", err)


def band_case() -> tuple[str, float]:
    k, side = 33, 8
    channels = -(-2**31 // (k * 64 * 32)) + 32  # BK x BW = 64 x 32 at a 33-wide kernel
    module = sys.modules[type(pc.compile("padre3", dim=4, grid=(2, 2),
                                         backend="triton")).__module__]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, side * side, channels, generator=gen).half()
    w = torch.randn(channels, k, k, generator=gen) / k
    args = (None, None, None, None, None, side, side, k // 2, k // 2, True, False)
    with torch.no_grad():
        z = module.dwconv_hadamard(x, w, *args)[0]
        ref = module.naive_dwconv_hadamard(x.float(), w, *args)[0]
    err = (z.float() - ref).abs().nan_to_num(float("inf")).max().item()
    return f"Toeplitz band, {k} x {k} kernel, {channels:,} channels, {side} x {side} grid", err


CASES = {"caote": (caote_case, 1e-5), "band": (band_case, 5e-2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    rows = []
    for name in args.cases:
        run, tol = CASES[name]
        start = time.perf_counter()
        what, err = run()
        verdict = "pass" if err <= tol else "FAIL"
        rows.append(f"| {what} | {err:.3g} | {tol:g} | {verdict} | "
                    f"{time.perf_counter() - start:.0f} |")
        print(rows[-1], flush=True)
    RESULTS.write_text(
        "# Kernels just past their int32 offset thresholds (Triton's CPU interpreter)\n\n"
        f"Command: `TRITON_INTERPRET=1 python benchmarks/int32_offsets.py "
        f"--cases {' '.join(args.cases)}`\n\n"
        "| case | max abs error vs reference | tolerance | verdict | seconds |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
