"""Clean-up passes: identity elimination, dead-branch elimination, common subexpressions."""

from __future__ import annotations

from typing import Any

from padre_compiler.ir.graph import Graph
from padre_compiler.passes.base import PassContext, register_pass


@register_pass("eliminate_identity", "identity(x) -> x; add(x) -> x; split(x, parts=1) -> x")
def eliminate_identity(g: Graph, ctx: PassContext) -> int:
    n = 0
    for nid, node, inputs in g.items():
        trivial = (node.op == "identity" or (node.op == "add" and len(inputs) == 1)
                   or (node.op == "split" and node.a["parts"] == 1))
        if trivial:
            g.replace_uses(nid, inputs[0])
            g.g.remove_node(nid)
            n += 1
    return n


@register_pass("eliminate_dead", "drop nodes the output does not depend on (unused Z_i)")
def eliminate_dead(g: Graph, ctx: PassContext) -> int:
    return g.prune()


@register_pass("cse", "nodes with equal (op, attrs, params, inputs) compute equal tensors: "
                      "keep one (every op is deterministic)")
def cse(g: Graph, ctx: PassContext) -> int:
    seen: dict[tuple[Any, ...], int] = {}
    n = 0
    for nid, node, inputs in g.items():
        if node.op in ("input", "output"):
            continue
        key = node.key(inputs if node.op != "add" else tuple(sorted(inputs)))
        if node.op == "hadamard":
            key = node.key(tuple(sorted(inputs)))
        if key in seen:
            g.replace_uses(nid, seen[key])
            g.g.remove_node(nid)
            n += 1
        else:
            seen[key] = nid
    return n
