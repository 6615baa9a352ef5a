"""Verification throughput on this machine: the README's fuzzing rate and certificate times.

    .venv/bin/python benchmarks/verification.py      # writes benchmarks/results/verification.md

Runs, one after another, `padre fuzz padre3 --examples 300` five times (its printed rate each
time; regressions, were one to fail, go to a temporary folder), `padre fuzz mamba --examples
250 --seed 0` once, and the graph and code certificates of padre3 (N = 196, D = 128) and SimA
(N = 512, D = 256), 8 trials each, as `padre verify` prints them (the graph certificate's own
time included). Run it on a quiet machine: the rates are single-threaded wall clock.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
FUZZ_RUNS = 5
COMMANDS = [  # (what a run is shown as, its arguments after `padre`)
    *[("fuzz padre3 --examples 300", ["fuzz", "padre3", "--examples", "300"])] * FUZZ_RUNS,
    ("fuzz mamba --examples 250 --seed 0", ["fuzz", "mamba", "--examples", "250", "--seed", "0"]),
    ("verify padre3 --dim 128 --grid 14x14 --trials 8",
     ["verify", "padre3", "--dim", "128", "--grid", "14x14", "--trials", "8"]),
    ("verify sima --dim 256 --tokens 512 --trials 8",
     ["verify", "sima", "--dim", "256", "--tokens", "512", "--trials", "8"]),
]
RESULT = re.compile(r"examples passed|certificate|normalisers|for the graph certificate")


def run(args: list[str], regressions: Path) -> list[str]:
    """The lines `padre ARGS` prints that state a result (no progress bars)."""
    extra = ["--regressions", str(regressions)] if args[0] == "fuzz" else []
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", *args, *extra],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, COLUMNS="200"))
    if proc.returncode:
        raise SystemExit(f"padre {' '.join(args)} exited {proc.returncode}:\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return [line for line in proc.stdout.splitlines() if RESULT.search(line)]


def main() -> int:
    lines = ["# Verification throughput", "",
             f"Command: `python benchmarks/verification.py`; {platform.processor() or 'CPU'}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}. Each command's "
             "result lines, as it printed them:", "", "```"]
    with tempfile.TemporaryDirectory() as regressions:
        for shown, args in COMMANDS:
            printed = run(args, Path(regressions))
            print(f"$ padre {shown}", *printed, sep="\n", flush=True)
            lines += [f"$ padre {shown}", *printed]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "verification.md").write_text("\n".join([*lines, "```"]) + "\n")
    print(f"wrote {OUT / 'verification.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
