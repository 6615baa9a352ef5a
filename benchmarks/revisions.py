"""Generated modules as committed at a git revision, for the benchmarks' --baseline-rev."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_at(rev: str, spec: str, tmp: Path) -> Path:
    """codegen/triton/<spec>.py as committed at `rev`, written to `tmp` as <spec>_<rev>.py."""
    rel = f"codegen/triton/{spec}.py"
    text = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    path = tmp / f"{spec}_{rev}.py"
    path.write_text(text)
    return path
