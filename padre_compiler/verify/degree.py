"""Total degree of a graph's output in all its random variables: inputs, weights and the
values of uninterpreted normalisers. This is the `d` of the Schwartz-Zippel bound (d/p)^k."""

from __future__ import annotations

from padre_compiler.ir.graph import Graph
from padre_compiler.ir.params import ParamExpr
from padre_compiler.ir.registry import RuleTable

total_degree_rules = RuleTable("total degree")


def param_degree(expr: ParamExpr) -> int:
    """Degree of a parameter expression in the trainable tensors' entries."""
    if expr.fn == "leaf":
        return 1
    degs = [param_degree(a) for a in expr.operands()]
    return max(degs) if expr.fn in ("concat", "add", "sum_copies") else sum(degs)


def _linear(ins: list[int], params: list[int], attrs: dict) -> int:
    # y = (x W + b): degree of x plus the weight's; a bias adds its own degree as a new term
    weight = max((p for p in params[:1]), default=0)
    return max([ins[0] + weight, *params[1:]])


def _sum(ins: list[int], params: list[int], attrs: dict) -> int:
    return max(ins + params)


total_degree_rules.register(
    "identity", "diagonal", "dense", "dwconv1d", "dwconv2d", "global_sum", "prefix_sum",
    "expand", "contract", "split", "output")(_linear)
# filter * x and skip * x: both weights multiply x
total_degree_rules.register("long_conv")(lambda ins, params, attrs: ins[0] + max(params))
total_degree_rules.register("add", "bias")(_sum)
total_degree_rules.register("input")(lambda ins, params, attrs: 1)
total_degree_rules.register("hadamard", "linear_attention")(
    lambda ins, params, attrs: sum(ins) + sum(params))
total_degree_rules.register("poly")(lambda ins, params, attrs: ins[0] * (len(attrs["coeffs"]) - 1))
# x * phi(x): phi's value is one more random variable (a random oracle's output)
total_degree_rules.register("normalize")(lambda ins, params, attrs: ins[0] + 1)
total_degree_rules.register("scaled_sum")(lambda ins, params, attrs: max(
    i + p for i, p in zip(ins, params, strict=True)))


def total_degree(g: Graph) -> int:
    deg: dict[int, int] = {}
    for nid, node, inputs in g.items():
        params = [param_degree(e) for _, e in node.params]
        deg[nid] = total_degree_rules[node.op]([deg[i] for i in inputs], params, node.a)
    return deg[g.output_id]
