"""Random valid specs: compiled module == float64 reference == exact sympy expansion; every
pass preserves the polynomial; gradients check."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler.backends.reference import run_graph
from padre_compiler.compiler import optimise, pass_context
from padre_compiler.ir.ops import EvalContext
from padre_compiler.symbolic.expand import expand_graph, rational_weights
from tests.helpers import compiled_with, random_case_inputs, reference, rel_err
from tests.strategies import specs


@given(specs())
def test_compiled_module_matches_reference(case) -> None:
    params, x = random_case_inputs(case)
    module = compiled_with(case.spec, case.dim, case.grid, params)
    out = module(torch.tensor(x)).detach().numpy()
    ref = reference(case.spec.graph(), x, params, case.grid)
    assert out.shape == x.shape
    assert rel_err(out, ref) < 1e-10


def _exact_inputs(case, seed: int):
    rng = np.random.default_rng(seed)
    params = {k: np.vectorize(lambda v: Fraction(int(v), 4), otypes=[object])(
        rng.integers(-6, 7, size=d.concrete(case.dim)))
        for k, d in case.spec.param_decls().items()}
    x = np.vectorize(lambda v: Fraction(int(v), 3), otypes=[object])(
        rng.integers(-5, 6, size=(1, case.tokens, case.dim)))
    return params, x


@given(specs(allow_norm=False))
def test_every_pass_preserves_the_polynomial_exactly(case) -> None:
    """Exact rational evaluation before and after each pass: equal, not just close."""
    ctx = pass_context(case.spec, case.dim, case.grid, case.tokens)
    _, records = optimise(case.spec, ctx)
    exact = EvalContext(grid=case.grid, abs=None, sqrt=None, const=Fraction)
    params, x = _exact_inputs(case, 3)
    before = run_graph(records[0].graph, x, params, exact)
    for rec in records[1:]:
        after = run_graph(rec.graph, x, params, exact)
        assert (after == before).all(), f"pass {rec.name} changed the polynomial"


@settings(max_examples=12)
@given(specs(max_degree=3, allow_norm=False))
def test_compiled_module_matches_sympy_expansion(case) -> None:
    tokens = min(case.tokens, 4)
    grid = (1, tokens) if case.spec.layout == "grid2d" else None
    dim = case.dim
    g = case.spec.graph()
    weights = rational_weights(g.decls, dim, seed=5)
    expansion = expand_graph(g, tokens, dim, grid=grid, weights=weights)
    x = np.random.default_rng(2).integers(-3, 4, size=(1, tokens, dim))
    subs = dict(zip(expansion.x, (sp.Integer(int(v)) for v in x.flat), strict=True))
    expected = np.array(expansion.matrix.subs(subs), dtype=float)
    params = {k: np.array(v, dtype=float) for k, v in weights.items()}
    module = compiled_with(case.spec, dim, grid, params)
    out = module(torch.tensor(x, dtype=torch.float64)).detach().numpy()[0]
    assert rel_err(out, expected) < 1e-9


@settings(max_examples=8)
@given(specs(max_degree=3))
def test_gradcheck(case) -> None:
    params, x = random_case_inputs(case, batch=1)
    module = compiled_with(case.spec, case.dim, case.grid, params)
    xt = torch.tensor(x, requires_grad=True)
    assert torch.autograd.gradcheck(module, (xt,), eps=1e-6, atol=1e-5, rtol=1e-4)
    loss = module(xt).square().sum()
    grads = torch.autograd.grad(loss, [p for p in module.parameters()], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("seed", [0, 1])
@given(case=specs(max_degree=4, allow_norm=False), scale=st.sampled_from([2.0, -0.5]))
def test_top_term_is_homogeneous(seed: int, case, scale: float) -> None:
    """Z_i(λX) = λ^i Z_i(X) for bias-free maps: the degree analysis predicts the scaling."""
    from padre_compiler.symbolic.degree import degrees

    g = case.spec.graph()
    params, x = random_case_inputs(case, seed=seed)
    params = {k: (v if not k.endswith("_bias") else 0 * v) for k, v in params.items()}
    deg = degrees(g)
    values = run_graph(g, x, params, EvalContext(grid=case.grid), keep=True)
    scaled = run_graph(g, scale * x, params, EvalContext(grid=case.grid), keep=True)
    for nid, node, _ in g.items():
        terms = deg[nid].terms - {0}
        if node.label.startswith("Z") and len(terms) == 1 and "poly" not in {
                g.node(a).op for a in g.g.nodes}:
            (d,) = terms
            assert rel_err(scaled[nid], scale ** d * values[nid]) < 1e-9


@pytest.mark.parametrize(("kind", "heads"), [("l1_tokens", 1), ("l2_rows", 2), ("l1_rows", 2)])
def test_expansion_keeps_a_normaliser_as_an_opaque_factor(kind: str, heads: int) -> None:
    """normalize(v) = v ⊙ phi(v): the expansion is a polynomial in x and phi's symbols, and
    putting the normaliser's true values in for phi gives the float64 reference."""
    from padre_compiler import dsl

    x = dsl.tokens("sequence")
    normed = dsl.apply("normalize", dsl.dense(x, "a"), kind=kind, heads=heads, eps=0.5)
    spec = dsl.spec("normed", layout="sequence",
                    output=dsl.dense(normed * dsl.dense(x, "b"), "proj"))
    g = spec.graph()
    tokens, dim = 3, 2
    weights = rational_weights(g.decls, dim)
    expansion = expand_graph(g, tokens, dim, weights=weights)
    xs = np.random.default_rng(0).integers(-3, 4, size=(1, tokens, dim)).astype(float)
    params = {k: np.array(v, dtype=float) for k, v in weights.items()}
    ref = reference(g, xs, params, None)[0]
    v = xs[0] @ params["a_weight"].T  # the normaliser's input, [N, D]
    if kind == "l1_tokens":
        phi = {f"phi1_{c}": 1 / (np.abs(v[:, c]).sum() + 0.5) for c in range(dim)}
    else:
        rows = v.reshape(tokens, heads, dim // heads)
        norm = np.abs(rows).sum(-1) if kind == "l1_rows" else np.sqrt((rows ** 2).sum(-1))
        phi = {f"phi1_{t}_{h}": 1 / (norm[t, h] + 0.5) for t in range(tokens)
               for h in range(heads)}
    subs = {**dict(zip(expansion.x, (sp.Integer(int(u)) for u in xs.flat), strict=True)),
            **{sp.Symbol(k): sp.Float(u, 30) for k, u in phi.items()}}
    assert expansion.degrees_in_x() == {2}
    assert rel_err(np.array(expansion.matrix.subs(subs), dtype=float), ref) < 1e-12
