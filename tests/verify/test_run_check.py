"""`padre compile --run`'s check: the float32 error, and whether rounding explains it (the
eager twin's judgement), or which of a Triton module's paths ran."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from padre_compiler import cli, dsl
from padre_compiler.compiler import generate
from padre_compiler.verify import run_check as rc
from padre_compiler.verify.rounding import Undecided
from tests.helpers import generated_runtime, scale_run_check_modules


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_well_conditioned_spec_needs_no_judgement() -> None:
    check = rc.run_check(generate("padre3", dim=8, grid=(3, 3)), 8, (3, 3), 9)
    assert check.error < rc.TOLERANCE and check.verdict is None and check.kernels is None


def test_mamba_float32_error_is_rounding(capsys: pytest.CaptureFixture) -> None:
    """Mamba's expanded scan loses float32 to cancellation (proofs/mamba.md); its eager
    twin loses as much."""
    torch.manual_seed(0)
    assert cli.main(["compile", "mamba", "--dim", "8", "--tokens", "64", "--run"]) == 0
    out = flat(capsys.readouterr().out)
    assert "check float32 cannot tell (the spec lowered op by op is off by" in out
    assert ": rounding (run it in float64)" in out


def test_a_module_one_percent_off_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    scale_run_check_modules(monkeypatch, 1.01)
    check = rc.run_check(generate("conv2former", dim=8, grid=(3, 3)), 8, (3, 3), 9)
    assert 5e-3 < check.error < 2e-2
    assert "in float32: the module is wrong" in check.verdict


def test_overflow_is_told_from_a_wrong_module(monkeypatch: pytest.MonkeyPatch) -> None:
    x = dsl.tokens("sequence")
    big = dsl.diagonal(x, "s", init={"scale": (1e25, 2e25)})
    result = generate(dsl.spec("big", layout="sequence", output=big * big), dim=4)
    check = rc.run_check(result, 4, None, 5)  # values ~1e50: past float32, fine in float64
    assert "lowered op by op overflows in float32" in check.verdict
    assert check.verdict.endswith(": rounding (run it in float64)")
    real = rc.compile_module_class

    def nan(result) -> type:
        class NaN(real(result)):
            def forward(self, x):
                return super().forward(x).index_fill(1, torch.tensor([0]), float("nan"))

        return NaN

    monkeypatch.setattr(rc, "compile_module_class", nan)
    check = rc.run_check(generate("conv2former", dim=8, grid=(3, 3)), 8, (3, 3), 9)
    assert "in float32: the module is wrong" in check.verdict


def test_a_wrong_mamba_module_is_found_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """mamba's float32 error (~1e7) says nothing, its own or its twin's; negated, or scaled
    by 1.5, the module is told wrong in float64."""
    real = rc.compile_module_class
    for factor in (-1.0, 1.5):
        def off(result, factor=factor) -> type:
            cls = real(result)

            class Off(cls):
                def forward(self, x):
                    return factor * super().forward(x)

            return Off

        monkeypatch.setattr(rc, "compile_module_class", off)
        torch.manual_seed(0)
        check = rc.run_check(generate("mamba", dim=8), 8, None, 64)
        assert "float32 cannot tell" in check.verdict, check.verdict
        assert check.verdict.endswith("the module is wrong (please report it with this command)")


def test_run_says_what_ran_the_fused_regions() -> None:
    runtime = generated_runtime("conv2former", 8, (3, 3))  # skips without Triton
    result = generate("conv2former", dim=8, grid=(3, 3), backend="triton")
    kernels = rc.run_check(result, 8, (3, 3), 9).kernels
    if runtime.INTERPRETED:
        assert kernels.startswith("Triton's, in its CPU interpreter")
    else:
        assert kernels.startswith("their naive PyTorch twins")
    mamba = rc.run_check(generate("mamba", dim=8, backend="triton"), 8, None, 8).kernels
    assert "every op of this spec runs in torch" in mamba
    # a new process without TRITON_INTERPRET, on the CPU: the twins ran
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", "conv2former",
                          "--backend", "triton", "--dim", "8", "--grid", "3x3", "--run"],
                         env=env, capture_output=True, text=True, check=True)
    assert "kernels their naive PyTorch twins" in flat(run.stdout)
    # fuzzing there would check none of the kernels: refused, exit 2, before any example
    run = subprocess.run([sys.executable, "-c", "from padre_compiler.verify.fuzz import fuzz; "
                          "fuzz('conv2former', backend='triton', examples_n=2)"],
                         env={**env, "TRITON_INTERPRET": "0"}, capture_output=True, text=True)
    assert run.returncode != 0 and "the fused regions would run their naive" in run.stderr


def test_an_undecided_element_is_held_to_the_bound_as_the_fuzzer_holds_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference whose first element is far off the module's (as where a sign the dtype
    cannot decide came out the other way): held to the rounding bound where that bound calls
    it undecided (a pass within it, a wrong module beyond it), an error otherwise (seeded:
    the module's weights set the error's scale)."""
    torch.manual_seed(0)
    result = generate("castling_vit", dim=8)
    reference = rc.run_graph

    def flipped(*args, **kwargs):
        ref = reference(*args, **kwargs).copy()
        ref[0, 0, 0] += 10 * np.abs(ref).max()  # 10/11 of the largest off, whatever the weights
        return ref

    monkeypatch.setattr(rc, "run_graph", flipped)
    assert rc.run_check(result, 8, None, 6).error > 0.5

    def first_undecided(bound: float):
        def undecided(graph, x, params, dtype, ctx):
            mask = np.zeros(x.shape, bool)  # Castling-ViT's output has its input's shape
            mask[0, 0, 0] = True
            largest = np.abs(reference(graph, x, params, ctx)).max()  # the offset's scale
            return Undecided(mask, True, np.where(mask, bound * largest, 0.0))
        return undecided

    monkeypatch.setattr(rc, "undecided", first_undecided(11.0))
    check = rc.run_check(result, 8, None, 6)
    assert check.error < rc.TOLERANCE and check.verdict is None
    monkeypatch.setattr(rc, "undecided", first_undecided(9.0))
    check = rc.run_check(result, 8, None, 6)
    assert check.wrong and "more than the rounding bound" in check.verdict
