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

    sources = [generate(load_spec(n)).source
               for n in ("padre3", "conv2former", "conv2former_gelu")]
    sources += [generate(s).source for s in zoo()]
    for kind, mutate in MUTATORS.items():
        assert any(next(mutate(src), src) != src for src in sources), kind
    # each branch of a mutator finds its line: the 1-D conv's reversed taps had looked for a
    # helper line that no longer exists (its 2-D branch kept the kind applying)
    hyena = generate(load_spec("hyena")).source
    assert any("weight.flip(-1)" in m for m in MUTATORS["convolution on the wrong axis"](hyena))


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


def test_doubled_constants_are_a_surrogates_end_coefficients_and_bounds() -> None:
    """Conv2Former-GELU's one surrogate, 1.88 T_0 + ... - 0.104 T_8 on [-6, 6]: four mutants
    (c_0, c_8 and each bound doubled; its zero coefficients are left alone), each caught by
    both checks."""
    import re

    from padre_compiler.compiler import generate
    from padre_compiler.spec.loader import load_spec
    from padre_compiler.verify.mutate import doubled_constant

    spec = load_spec("conv2former_gelu")
    source = generate(spec).source
    changed = []
    for mutant in doubled_constant(source):
        old, new = (re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text) for text in (source, mutant))
        (a, b), = [(x, y) for x, y in zip(old, new, strict=True) if x != y]
        assert float(b) == 2 * float(a)
        changed.append(float(a))
    assert changed == [1.8812213644726508, -0.1041900667172935, -6.0, 6.0]
    results = run_mutants([spec], kinds=["doubled constant"], fuzz_examples=15)
    assert len(results) == 4 and all(r.by_certificate and r.by_fuzzer for r in results), results
