"""The eager twin held to the reference in long double (padre_compiler.verify.lowering): it
passes on every bundled spec with normalisers or surrogates, and a wrong lowering helper, which
the compiled module and its twin share, fails the code certificate and the fuzzer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from padre_compiler.backends import pytorch
from padre_compiler.backends.reference import INIT_INPUT_SCALE, random_params
from padre_compiler.compiler import compile_module_class, eager_class, generate
from padre_compiler.spec.loader import load_spec
from padre_compiler.verify import lowering
from padre_compiler.verify.certificate import _load, check_code
from padre_compiler.verify.fuzz import fuzz

pytestmark = pytest.mark.skipif(not lowering.WIDE, reason="long double is float64 here")

NUMERIC = {"sima": None, "castling_vit": None, "conv2former_gelu": (4, 5), "mamba": None}


def twin_check(name: str, seed: int, init: bool) -> lowering.Lowering:
    spec = load_spec(name)
    graph, grid, dim = spec.graph(), NUMERIC[name], 8
    tokens = 20 if grid else 16
    x = np.random.default_rng(seed).standard_normal((2, tokens, dim))
    x *= INIT_INPUT_SCALE if init else 1.0
    params = random_params(graph.decls, dim, seed=seed + 1, init_ranges=init)
    twin = eager_class(graph, name)
    with torch.no_grad():
        out = _load(twin(dim, grid) if grid else twin(dim), params)(torch.tensor(x)).numpy()
    return lowering.check_lowering(out, graph, x, params, grid)


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_every_bundled_twin_passes_and_is_judged(name: str) -> None:
    for seed in range(4):
        for init in (False, True):
            result = twin_check(name, seed, init)
            assert result.ok and result.allowed < 1e-3, (seed, init, result)
            if name != "mamba":  # well conditioned: a few ulp against the 1e-10 floor
                assert result.error < 1e-14 and result.allowed == lowering.FLOOR


@pytest.mark.parametrize(("helper", "old", "new"), [
    ("normalize", "x.abs().sum(1,", "x.abs().sum(2,"),  # the l1 norm over the wrong axis
    ("poly", "ck + 2 * u * b1 - b2", "ck + 2 * u * b1 + b2"),  # Clenshaw's sign
])
def test_a_wrong_helper_fails_the_certificate_and_the_fuzzer(monkeypatch, helper: str,
                                                             old: str, new: str) -> None:
    """Module and twin share the helper, so the twin's error alone would admit the bug (4x a
    twin off by 0.6 allows 2.3); held to the reference, the twin fails."""
    name = "sima" if helper == "normalize" else "conv2former_gelu"
    assert old in pytorch.HELPERS[helper]
    monkeypatch.setitem(pytorch.HELPERS, helper, pytorch.HELPERS[helper].replace(old, new))
    spec, grid = load_spec(name), NUMERIC[name]
    module_cls = compile_module_class(generate(spec, dim=8, grid=grid, tokens=20))
    code = check_code(module_cls(8, grid) if grid else module_cls(8), spec.graph(), dim=8,
                      tokens=20 if grid else 16, grid=grid)
    assert code.applicable and not code.passed and "lowering helper" in code.detail
    report = fuzz(name, examples_n=20)
    assert report.failure is not None and "lowering helper" in report.failure.message


def test_without_a_wider_long_double_the_check_says_it_did_not_run(monkeypatch) -> None:
    monkeypatch.setattr(lowering, "WIDE", False)
    assert lowering.check_lowering(np.zeros((1, 2, 2)), load_spec("sima").graph(),
                                   np.zeros((1, 2, 2)), {}, None) is None
    spec = load_spec("sima")
    module_cls = compile_module_class(generate(spec, dim=8, tokens=16))
    code = check_code(module_cls(8), spec.graph(), dim=8, tokens=16, grid=None)
    assert code.passed and "unchecked: long double is float64 here" in code.detail
