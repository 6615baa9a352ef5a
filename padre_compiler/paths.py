"""Where padre-compiler's files live.

The bundled specs are the checkout's `specs/`; they travel with the package as
`padre_compiler/spec/bundled`, a link to `specs/` that a wheel (or an sdist) carries as
files. `codegen/`, `proofs/`, `tests/regressions/` and `benchmarks/results/` belong to a
source checkout (the folder above the package, holding pyproject.toml); the commands that
regenerate them write there only when the package runs from one (a clone, installed with
`pip install -e .` or on PYTHONPATH).
"""

from __future__ import annotations

from pathlib import Path

from padre_compiler.errors import PadreError

PACKAGE_DIR = Path(__file__).resolve().parent


def checkout() -> Path | None:
    """The source checkout the package runs from, or None (an installed wheel)."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "specs").is_dir() else None


def _specs_dir() -> Path:
    """A checkout's specs/ (its link in the package is a plain file where a clone keeps no
    links), else the files an install carries."""
    root = checkout()
    return root / "specs" if root else PACKAGE_DIR / "spec" / "bundled"


SPECS_DIR = _specs_dir().resolve()


def checkout_path(relative: str, purpose: str,
                  fix: str = "clone the repository and install it with `pip install -e .`"
                  ) -> Path:
    """`relative` inside the source checkout. Where there is none, a PadreError: `purpose`
    says what needed it (e.g. "padre compile --all regenerates a checkout's codegen/"), `fix`
    what to do instead."""
    root = checkout()
    if root is None:
        raise PadreError(f"{purpose}, and this package runs from {PACKAGE_DIR.parent}, which "
                         f"is not a source checkout; {fix}")
    return root / relative


def write_proof(name: str, markdown: str, path: str | Path | None = None) -> Path:
    """Write a derivation's report to `path`, else to proofs/<name>.md of the source
    checkout, whole or not at all (a temporary file renamed over it); returns the path."""
    out = Path(path) if path else checkout_path(f"proofs/{name}.md",
                                                "a proof is written to proofs/NAME.md",
                                                "give the path to write it to")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(markdown, encoding="utf-8")
    tmp.replace(out)
    return out
