"""Mutation testing on a small subset: every function-changing mutant is caught."""

from __future__ import annotations

from padre_compiler.verify.mutate import MUTATORS, run_mutants, zoo


def test_mutants_are_caught() -> None:
    spec = zoo()[0]
    results = run_mutants([spec], kinds=["wrong causal mask", "dropped bias", "off-by-one padding"],
                          fuzz_examples=15)
    assert len(results) >= 5
    assert all(r.caught for r in results), [r for r in results if not r.caught]
    assert all(r.by_certificate for r in results)


def test_every_mutation_kind_applies_somewhere() -> None:
    from padre_compiler.compiler import generate
    from padre_compiler.spec.loader import load_spec

    sources = [generate(load_spec(n)).source for n in ("padre3", "conv2former")]
    sources += [generate(s).source for s in zoo()]
    for kind, mutate in MUTATORS.items():
        assert any(next(mutate(src), src) != src for src in sources), kind


def test_mutants_of_a_module_that_fails_its_checks_are_not_judged(monkeypatch) -> None:
    """Were the unmutated module to fail the certificate, every mutant would count as caught:
    run_mutants refuses instead."""
    import pytest

    from padre_compiler.errors import PadreError
    from padre_compiler.verify import mutate

    monkeypatch.setattr(mutate, "_certificate_catches", lambda cls, spec: True)
    with pytest.raises(PadreError, match="unmutated module fails"):
        run_mutants([zoo()[0]], kinds=["dropped bias"], fuzz_examples=2)


def test_the_certificate_runs_on_specs_with_heads() -> None:
    """sima and castling_vit have 8 heads: at D = 4, 5 their modules cannot be built, and a
    crash counts as a catch. The probes split into heads, and the unmutated modules pass."""
    from padre_compiler.compiler import compile_module_class, generate
    from padre_compiler.spec.loader import load_spec
    from padre_compiler.verify import mutate

    for name in ("sima", "castling_vit"):
        spec = load_spec(name)
        assert all(dim % 8 == 0 for dim, _ in mutate.probe_sizes(spec))
        assert not mutate._certificate_catches(compile_module_class(generate(spec)), spec)
