"""Where padre-compiler's files live.

The bundled specs are the checkout's `specs/`; they travel with the package as
`padre_compiler/spec/bundled`, a link to `specs/` that a wheel (or an sdist) carries as
files. `codegen/`, `proofs/`, `tests/regressions/` and `benchmarks/results/` belong to a
source checkout (the folder above the package, holding pyproject.toml); the commands that
regenerate them write there only when the package runs from one (a clone, installed with
`pip install -e .` or on PYTHONPATH).
"""

from __future__ import annotations

import os
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


def bundled_stem(source: str) -> str | None:
    """The bundled spec's name where `source` is that spec's file, else None (another file,
    or a spec built in Python)."""
    path = Path(source)
    bundled = SPECS_DIR / path.name
    if path.suffix == ".toml" and bundled.exists() and bundled.resolve() == path.resolve():
        return path.stem
    return None


def write_proof(name: str, markdown: str, path: str | Path | None = None) -> Path:
    """Write a derivation's report to `path`, else to proofs/<name>.md of the source
    checkout, whole or not at all (a temporary file renamed over it); returns the path."""
    out = Path(path) if path else checkout_path(f"proofs/{name}.md",
                                                "a proof is written to proofs/NAME.md",
                                                "give the path to write it to")
    write_atomic(out, markdown, what=f"the proof {out}", example=f"{name}.md")
    return out


def write_atomic(path: str | Path, data: str | bytes, *, what: str | None = None,
                 example: str = "module.py", inputs: tuple[str | Path, ...] = ()) -> None:
    """Write whole or not at all: a regular file is replaced by a rename (keeping its
    permissions), so a crash never leaves it half-written; a link is written through to its
    target, and a device or pipe (/dev/null, /dev/stdout) is written directly, never
    replaced. Refused as `output_target` refuses. `what` names the path in errors (default
    "-o PATH")."""
    what = what or f"-o {path}"
    target = output_target(path, what=what, example=example, inputs=inputs)

    def write(to: Path) -> None:
        if isinstance(data, bytes):
            to.write_bytes(data)
        else:
            to.write_text(data, encoding="utf-8")

    try:
        if target.exists() and not target.is_file():
            write(target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            write(tmp)
            if target.exists():
                tmp.chmod(target.stat().st_mode & 0o7777)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        raise PadreError(f"{what}: cannot write it ({err.strerror or err}); give a writable "
                         "file path") from None


def output_target(path: str | Path, *, what: str | None = None, example: str = "module.py",
                  inputs: tuple[str | Path, ...] = ()) -> Path:
    """The file `path` writes (a link's target), or a PadreError saying why it cannot be
    written: empty, a folder, a path under a file, a read-only file or folder, or one of the
    command's `inputs` (a spec, a weights file), which it would overwrite."""
    shown = str(path)
    what = what or f"-o {shown}"
    if not shown:
        raise PadreError(f"{what}: an empty path; give a file path such as {example}")
    if shown.endswith(("/", os.sep)):
        raise PadreError(f"{what}: a folder; give a file path such as {shown}{example}")
    try:
        target = Path(path).resolve() if Path(path).is_symlink() else Path(path)
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise PadreError(f"{what}: cannot follow the link ({err})") from None
    check_writable_folder(target.parent, what)
    if target.is_dir():
        raise PadreError(f"{what}: a folder; give a file path such as {target / example}")
    for given in inputs:
        if target.exists() and Path(given).exists() and target.samefile(given):
            raise PadreError(f"{what}: that is the input {given}, which writing would "
                             "overwrite; give another path")
    if target.is_file() and not os.access(target, os.W_OK):
        raise PadreError(f"{what}: the file is read-only")
    return target


def check_writable_folder(path: Path, what: str) -> None:
    """Refuse before any work a folder that cannot be made or written: its nearest existing
    part must be a writable directory. `what`: the option and value the message names."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PadreError(f"{what}: {existing} is a file, not a folder; pass a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PadreError(f"{what}: {existing} is not writable; pass a writable folder")
