"""Every op has a rule in every table; a missing rule is an error that names op and table."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import padre_compiler as pc
from padre_compiler.backends.pytorch import torch_lowering
from padre_compiler.errors import MissingRuleError
from padre_compiler.ir import ops
from padre_compiler.ir.registry import OPS, RuleTable
from padre_compiler.symbolic.latex import latex_rules
from padre_compiler.verify.degree import total_degree_rules
from padre_compiler.verify.rounding import rounding_rules

TABLES = [ops.shape_rules, ops.param_rules, ops.degree_rules, ops.flop_rules,
          ops.reference_rules, torch_lowering, latex_rules, total_degree_rules, rounding_rules]


@pytest.mark.parametrize("table", TABLES, ids=[t.concern for t in TABLES])
def test_every_op_has_a_rule(table: RuleTable) -> None:
    assert table.missing() == []


def test_missing_rule_names_op_and_table() -> None:
    with pytest.raises(MissingRuleError, match="op 'softmax' has no rule in the torch lowering"):
        torch_lowering["softmax"]


def test_ops_are_declared_once() -> None:
    from padre_compiler.ir.registry import declare

    with pytest.raises(ValueError, match="declared twice"):
        declare(OPS["dense"])


def test_the_degree_rule_of_a_surrogate_counts_cross_terms() -> None:
    """p(a + a ⊙ a) with p quadratic has monomials of degree 3 (the cross term 2 a^3): the
    rule's degrees are those of the exact expansion."""
    from padre_compiler import dsl
    from padre_compiler.symbolic.degree import degrees
    from padre_compiler.symbolic.expand import expand_graph, rational_weights

    x = dsl.tokens("sequence")
    a = dsl.dense(x, "a")
    spec = dsl.spec("cross", layout="sequence",
                    output=dsl.dense(dsl.surrogate(a + a * a, "gelu", 2, -4.0, 4.0), "p"))
    g = spec.graph()
    expansion = expand_graph(g, 1, 1, weights=rational_weights(g.decls, 1, seed=3))
    exact = expansion.degrees_in_x()
    assert {1, 2, 3, 4} <= exact <= degrees(g)[g.output_id].terms


def _apply(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y[b, t, c] = sum_s matrix[c, t, s] x[b, s, c]: a per-channel token map."""
    return np.einsum("cts,bsc->btc", matrix, x)


@pytest.mark.parametrize("n, k, causal", [(1, 3, False), (5, 4, True), (4, 9, False),
                                          (7, 3, True)])
def test_reference_1d_token_maps_are_their_matrices(n: int, k: int, causal: bool) -> None:
    """dwconv1d's A[t, s] = w[s - t + pad] (pad k - 1 causal, k // 2 centred; zero off the
    band) and long_conv's A[t, s] = h[t - s] for s <= t, built entry by entry; kernels longer
    than the sequence included (the reference skips taps that reach no token)."""
    rng = np.random.default_rng(n * 10 + k)
    x, w, h = (rng.standard_normal(s) for s in ((2, n, 3), (3, k), (3, n + 2)))
    pad = k - 1 if causal else k // 2
    conv = np.zeros((3, n, n))
    lower = np.zeros((3, n, n))
    for t, s in itertools.product(range(n), repeat=2):
        if 0 <= s - t + pad < k:
            conv[:, t, s] = w[:, s - t + pad]
        if s <= t:
            lower[:, t, s] = h[:, t - s]
    got = ops.reference_rules["dwconv1d"]([x], {"weight": w},
                                          {"kernel": k, "causal": causal}, ops.EvalContext())
    np.testing.assert_allclose(got, _apply(conv, x), rtol=1e-13, atol=1e-13)
    got = ops.reference_rules["long_conv"]([x], {"filter": h}, {"length": n + 2},
                                           ops.EvalContext())
    np.testing.assert_allclose(got, _apply(lower, x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("grid, kernel", [((1, 1), (3, 3)), ((2, 3), (11, 11)),
                                          ((5, 4), (3, 7)), ((3, 8), (5, 3))])
def test_reference_dwconv2d_is_its_matrix(grid: tuple[int, int], kernel: tuple[int, int]
                                          ) -> None:
    """A[(h, w), (h', w')] = weight[h' - h + kh // 2, w' - w + kw // 2] on a row-major
    grid, zero off the kernel's window: non-square grids and kernels past the grid."""
    (gh, gw), (kh, kw) = grid, kernel
    rng = np.random.default_rng(gh * 100 + kh)
    x, wt = rng.standard_normal((2, gh * gw, 3)), rng.standard_normal((3, kh, kw))
    matrix = np.zeros((3, gh * gw, gh * gw))
    for h, w, h2, w2 in itertools.product(range(gh), range(gw), range(gh), range(gw)):
        i, j = h2 - h + kh // 2, w2 - w + kw // 2
        if 0 <= i < kh and 0 <= j < kw:
            matrix[:, h * gw + w, h2 * gw + w2] = wt[:, i, j]
    got = ops.reference_rules["dwconv2d"]([x], {"weight": wt}, {"kernel": list(kernel)},
                                          ops.EvalContext(grid=grid))
    np.testing.assert_allclose(got, _apply(matrix, x), rtol=1e-13, atol=1e-13)


def test_latex_brackets_every_operand_that_would_bind_wrongly() -> None:
    """(a ⊙ b) W, w ⊙ (a + b), 1 1^T (a + b) and (w ⊙ x) W keep their brackets (they printed as
    a ⊙ b W, w ⊙ a + b, ...); a conv's bias and a long convolution's skip term are printed;
    a name holding "_rows" is escaped once (twice made a LaTeX line break); two surrogates of
    one degree print apart (both printed p_4)."""
    from padre_compiler import dsl
    from padre_compiler.symbolic.latex import graph_latex

    x = dsl.tokens("sequence")
    a, b = dsl.dense(x, "a"), dsl.dense(x, "q_rows")
    cases = {
        dsl.dense(a * b, "p"): r"\left(\left(X\,W_{\mathrm{a}}\right) \odot \left(X\,W_{"
                               r"\mathrm{q\_rows}}\right)\right)\,W_{\mathrm{p}}",
        dsl.diagonal(dsl.add(a, b), "s") * x: r"w_{\mathrm{s}} \odot \left(X\,W_{\mathrm{a}} + ",
        dsl.global_sum(dsl.add(a, b)) * x: r"\mathbf{1}\mathbf{1}^\top \left(X\,W_{\mathrm{a}} +",
        dsl.dense(dsl.diagonal(x, "s"), "p") * x: r"\left(w_{\mathrm{s}} \odot X\right)\,W",
        dsl.dwconv1d(x, "c", kernel=3, bias=True) * dsl.long_conv(x, "h", length=8, skip=True):
            r"\mathrm{DW}^{3}_{\mathrm{c}}\left(X\right) + b\right) \odot \left(\mathcal{T}_"
            r"{\mathrm{h}}\left(X\right) + d_{\mathrm{h}} \odot X\right)",
        dsl.surrogate(x, "exp", 4, -1, 0) * dsl.surrogate(x, "softplus", 4, -1, 1):
            r"p^{\mathrm{exp}}_{4}\left(X\right) \odot p^{\mathrm{softplus}}_{4}\left(X\right)",
    }
    for output, text in cases.items():
        (equation,) = graph_latex(dsl.spec("t", layout="sequence", output=output).graph())
        assert text in equation, equation
        assert r"\\" not in equation


def test_rational_weights_are_never_zero() -> None:
    """A zero among them hid every term through a 1 x 1 weight in `inspect --expand` at
    D = 1 (hyena's showed degrees [0, 1, 2] of 3)."""
    from padre_compiler.ir.params import ParamDecl
    from padre_compiler.ir.width import Width
    from padre_compiler.symbolic.expand import rational_weights

    decls = {"w": ParamDecl((Width.const(40), Width.const(50)), "uniform")}
    values = rational_weights(decls, 1, seed=0)["w"]
    assert all(v != 0 and abs(v) <= 2 for v in values.ravel())


def test_symbolic_weights_expansion_is_bounded_by_its_terms() -> None:
    """With symbolic weights no degree bound holds (mamba_selective's expansion took minutes):
    a node past MAX_SYMBOLIC_TERMS stops it with a PadreError naming the way out; the same
    spec at rational weights, or a smaller one, expands."""
    from padre_compiler import dsl
    from padre_compiler.errors import PadreError
    from padre_compiler.symbolic.expand import expand_graph, rational_weights

    x = dsl.tokens("sequence")
    output = dsl.dense(x, "a") * dsl.dense(x, "b") * dsl.dense(x, "c") * dsl.dense(x, "d")
    g = dsl.spec("t", layout="sequence", output=output).graph()
    with pytest.raises(PadreError, match=r"reached \d+ terms in one node .*--symbolic-weights"):
        expand_graph(g, 1, 8)  # each of 8 entries a product of four 8-term sums: 8^4 terms
    assert expand_graph(g, 1, 8, weights=rational_weights(g.decls, 8)).degrees_in_x() == {4}
    assert expand_graph(g, 1, 3).degrees_in_x() == {4}


@pytest.mark.parametrize("tokens", [1, 196, 256, 1000])
def test_long_conv_flops_count_the_fft_length_the_torch_module_runs(tokens: int,
                                                                    monkeypatch) -> None:
    """The rule counts three real FFTs of length m and the spectral product: m is read off the
    generated module's own rfft calls: the power of two >= 2N - 1, 512 at 196 tokens, not 2N."""
    mixer = pc.compile("hyena", dim=4)
    lengths = []
    rfft = torch.fft.rfft

    def recorded(*args, n: int, **kwargs) -> torch.Tensor:
        lengths.append(n)
        return rfft(*args, n=n, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", recorded)
    with torch.no_grad():
        mixer(torch.randn(1, tokens, 4))
    (m,) = set(lengths)
    rule = ops.flop_rules["long_conv"]({"length": 1024, "skip": False}, [4], 4, tokens)
    assert rule == int(4 * (3 * 2.5 * m * math.log2(m) + 6 * m))
