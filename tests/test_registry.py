"""Every op has a rule in every table; a missing rule is an error that names op and table."""

from __future__ import annotations

import pytest

from padre_compiler.backends.pytorch import torch_lowering
from padre_compiler.errors import MissingRuleError
from padre_compiler.ir import ops
from padre_compiler.ir.registry import OPS, RuleTable
from padre_compiler.symbolic.latex import latex_rules

TABLES = [ops.shape_rules, ops.param_rules, ops.degree_rules, ops.flop_rules,
          ops.reference_rules, torch_lowering, latex_rules]


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
