"""A wheel built from the checkout carries the bundled specs, and the package it installs
compiles them; the commands that write into a source checkout refuse, with the fix, where
the package runs from no checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from padre_compiler.paths import SPECS_DIR, checkout
from padre_compiler.spec.loader import bundled_specs

ROOT = Path(__file__).resolve().parents[1]


def test_the_checkout_is_found_and_its_specs_are_the_bundled_ones() -> None:
    assert checkout() == ROOT
    assert (ROOT / "specs").resolve() == SPECS_DIR
    assert [p.name for p in bundled_specs()] == sorted(p.name for p in (ROOT / "specs").glob(
        "*.toml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel built from a copy of the checkout installs it: unpacked into a
    folder of its own (a wheel is a zip of the installed files)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("padre_compiler", "specs"):  # the package's link to specs/ stays a link
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(src)],
                           capture_output=True, text=True, cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp / "dist").glob("padre_compiler-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for spec in (ROOT / "specs").glob("*.toml"):
            member = f"padre_compiler/spec/bundled/{spec.name}"
            assert member in names, f"the wheel lacks {member}"
            assert zf.read(member) == spec.read_bytes()
        assert not [n for n in names if n.startswith(("codegen/", "proofs/", "tests/"))]
        zf.extractall(site)
    return site


def padre(site: Path, *args: str) -> subprocess.CompletedProcess:
    """`padre ARGS` run from outside the checkout with the unpacked wheel first on the path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "padre_compiler.cli", *args], env=env,
                          capture_output=True, text=True, cwd=site.parent, timeout=300)


def test_the_installed_package_compiles_a_bundled_spec(installed: Path) -> None:
    run = padre(installed, "compile", "padre3", "--dim", "16", "--grid", "4x4", "--run")
    assert run.returncode == 0, run.stderr
    assert "max rel. error vs float64 reference" in run.stdout
    # the package that ran is the wheel's
    probe = subprocess.run([sys.executable, "-c", "import padre_compiler; "
                            "print(padre_compiler.__file__)"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(installed)},
                           cwd=installed.parent, check=True)
    assert probe.stdout.strip().startswith(str(installed))


def test_an_install_without_its_specs_says_so(installed: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(installed, site)
    shutil.rmtree(site / "padre_compiler" / "spec" / "bundled")
    run = padre(site, "compile", "padre3")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "this install has no bundled specs" in " ".join(run.stderr.split())


@pytest.mark.parametrize(("args", "fix"), [
    (("compile", "--all"), "pip install -e ."),
    (("prove", "sima"), "pass --no-write"),
    (("fuzz", "padre3", "--examples", "1"), "give --regressions DIR"),
])
def test_checkout_commands_refuse_outside_a_checkout(installed: Path, args: tuple[str, ...],
                                                      fix: str) -> None:
    run = padre(installed, *args)
    assert run.returncode == 2, run.stdout + run.stderr
    message = " ".join(run.stderr.split())
    assert "is not a source checkout" in message and fix in message
    assert "Traceback" not in run.stderr
    assert not (installed / "codegen").exists() and not (installed / "proofs").exists()


def test_prove_prints_without_writing_outside_a_checkout(installed: Path) -> None:
    run = padre(installed, "prove", "sima", "--no-write", "-q")
    assert run.returncode == 0, run.stderr
    assert "sima: PASS" in run.stdout
