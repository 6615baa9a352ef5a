"""Degree and homogeneity analysis on the graph, from the degree rule table.

Each node gets the set of degrees (in X) of the monomials its entries contain. Linear maps
keep the set (adding 0 when they carry a bias), Hadamard products add degrees pairwise, sums
take unions. A node is homogeneous when its set has one element: Z_i(λX) = λ^i Z_i(X).
"""

from __future__ import annotations

from padre_compiler.ir import ops
from padre_compiler.ir.graph import Graph
from padre_compiler.ir.ops import Degrees


def degrees(g: Graph) -> dict[int, Degrees]:
    out: dict[int, Degrees] = {}
    for nid, node, inputs in g.items():
        has_bias = any(role == "bias" for role, _ in node.params)
        out[nid] = ops.degree_rules[node.op](node.a, [out[i] for i in inputs], has_bias)
    return out


def output_terms(g: Graph, projection: int | None = None) -> list[tuple[str, Degrees]]:
    """The summands of the output polynomial P (before the projection), with their degrees.

    projection: how many unary maps follow P (a TOML spec's `len(form.projection)`); P is
    that many steps back from the output, past a hook normalising it; its degree-0 term L
    (output.bias) is a term of its own, "L". None (a DSL spec, whose P is not marked): the
    first node back from the output with several inputs, or X."""
    deg = degrees(g)
    nid = g.inputs(g.output_id)[0]
    constant: list[tuple[str, Degrees]] = []
    if projection is None:
        while len(g.inputs(nid)) == 1:
            nid = g.inputs(nid)[0]
    else:
        for _ in range(projection):
            nid = g.inputs(nid)[0]
        if g.node(nid).op == "normalize":  # P's hook: the terms are those of its input
            nid = g.inputs(nid)[0]
        if g.node(nid).op == "bias":  # P = sum of W_i ⊙ Z_i, + L
            constant = [("L", Degrees(frozenset({0})))]
            nid = g.inputs(nid)[0]
    terms = g.inputs(nid) if g.node(nid).op == "add" else (nid,)
    return [(g.node(t).label or g.node(t).op, deg[t]) for t in terms] + constant
