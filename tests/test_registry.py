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
