"""The fuzzer: passes on correct code, catches wrong code, shrinks, writes a regression test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from padre_compiler.compiler import generate, load_source
from padre_compiler.verify.fuzz import Example, Harness, check_example, fuzz
from padre_compiler.verify.mutate import zoo
from padre_compiler.verify.poison import nan_poisoned


def test_fuzz_passes_on_bundled_specs() -> None:
    for name in ("padre3", "conv2former"):
        report = fuzz(name, examples_n=25)
        assert report.failure is None and report.examples > 0


def test_fuzz_catches_wrong_code_and_writes_a_shrunk_regression(tmp_path: Path) -> None:
    spec = zoo()[0]
    result = generate(spec)
    # the causal depthwise window made centred: y[t] sees x[t+1]
    wrong = result.source.replace("_dwconv1d(branch", "_dwconv1d(branch", 1)
    wrong = wrong.replace(", 3, 0)", ", 2, 1)")
    assert wrong != result.source
    harness = Harness(spec, "torch")
    harness.cls = getattr(load_source(wrong, "zoo_wrong"), result.class_name)
    report = fuzz(spec, examples_n=50, harness=harness, regression_dir=tmp_path)
    assert report.failure is not None
    ex = report.failure.example
    assert ex.tokens <= 3 and ex.batch == 1  # shrunk towards the smallest failing example
    assert report.regression is not None and report.regression.exists()
    assert "check_example" in report.regression.read_text()


def test_low_precision_rule_uses_the_eager_twin() -> None:
    outcome = check_example("conv2former", Example(dim=6, tokens=15, grid=(3, 5), batch=2,
                                                    dtype="bfloat16", seed=3))
    assert outcome.ok and outcome.eager_error is not None and outcome.eager_error > 0


def test_nan_poisoning() -> None:
    with nan_poisoned():
        assert torch.isnan(torch.empty(3)).all()
        assert torch.isnan(torch.zeros(2).new_empty(4)).all()
    assert not hasattr(torch.empty, "__wrapped_poison__")


def test_cli_fuzz_exit_codes() -> None:
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "fuzz", "conv2former",
                           "--examples", "20"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "20 examples passed" in proc.stdout
