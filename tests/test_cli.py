"""The `padre` command: compile (source, --explain, --run, --all), verify, inspect."""

from __future__ import annotations

from pathlib import Path

import pytest

from padre_compiler import cli


def test_compile_explain_prints_every_pass_with_cost(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["compile", "padre3", "--dim", "32", "--grid", "6x7", "--explain"]) == 0
    out = capsys.readouterr().out
    for name in ("after spec", "after cse", "after merge_linear", "after fuse_scaled_sum"):
        assert name in out
    assert "MFLOP" in out and "dwconv2d" in out and "graph certificate" in out


def test_compile_run_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_file = tmp_path / "m.py"
    assert cli.main(["compile", "conv2former", "--dim", "16", "--grid", "4x5", "-o",
                     str(out_file), "--run"]) == 0
    out = capsys.readouterr().out
    for words in ("degree         2", "parameters", "FLOPs / token", "softmax attention",
                  "max rel. error vs float64 reference", str(out_file)):
        assert words in out
    assert "class Conv2former" in out_file.read_text()


def test_compile_all_writes_every_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "CODEGEN_DIR", tmp_path)
    monkeypatch.setattr(cli, "ROOT", tmp_path)
    assert cli.main(["compile", "--all"]) == 0
    assert {p.stem for p in (tmp_path / "torch").glob("*.py")} >= {"padre3", "conv2former"}


def test_verify_reports_the_certificate(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["verify", "padre3", "--dim", "16", "--grid", "5x6", "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 trials at N=30, D=16: passed" in out and "code certificate: passed" in out


def test_inspect_expands(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["inspect", "conv2former", "--expand", "4,2", "--expand-grid", "2x2"]) == 0
    out = capsys.readouterr().out
    assert "degrees in x: [0, 1, 2]" in out and "Z_{2} =" in out


def test_compile_refuses_a_width_the_spec_cannot_split(tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "sima.py"
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", "sima",
                           "--dim", "100", "-o", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "divisible by 8" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
