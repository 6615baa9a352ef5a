"""The sympy derivation passes, is byte-deterministic, and fails for a wrong closed form."""

from __future__ import annotations

from pathlib import Path

from padre_compiler.caote.derive import prove

ROOT = Path(__file__).resolve().parents[2]


def test_proof_passes_and_is_deterministic(tmp_path: Path) -> None:
    """A fresh run reproduces the committed proofs/caote.md byte for byte (an earlier run)."""
    out = tmp_path / "caote.md"
    report = prove(write=True, path=str(out))
    assert report.passed, [c.name for c in report.checks if not c.passed]
    kinds = {c.kind for c in report.checks}
    assert {"symbolic identity", "numeric", "counterexample", "heuristic"} <= kinds
    assert out.read_text(encoding="utf-8") == report.markdown
    committed = ROOT / "proofs" / "caote.md"
    assert committed.read_bytes() == out.read_bytes(), "regenerate with prove()"


def test_wrong_formula_fails() -> None:
    report = prove(write=False, formula=lambda a: a)  # missing the 1/(1-α) factor
    assert not report.passed
    failed = {c.name for c in report.checks if not c.passed}
    assert "output shift after evicting one token" in failed
    assert "brute force, single token" in failed
    assert "FAIL" in report.markdown


def test_fastcaote_check_sees_a_wrong_formula() -> None:
    """The uniform-attention check held for every formula (o was written as the value mean and
    both sides carried formula(α)²): it now compares with the recomputed eviction."""
    for wrong in (lambda a: a, lambda a: 1 / (1 - a), lambda a: a / (1 - a) ** 2):
        report = prove(write=False, formula=wrong)
        failed = {c.name for c in report.checks if not c.passed}
        assert "FastCAOTE = CAOTE under uniform attention" in failed


def test_a_report_without_checks_does_not_pass() -> None:
    """An empty report proves nothing (it passed vacuously; Derivation already refused it)."""
    from padre_compiler.caote.derive import ProofReport

    assert not ProofReport().passed
