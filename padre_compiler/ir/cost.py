"""Graph cost from the cost rules: FLOPs and bytes moved, at a given width D and N tokens."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from padre_compiler.ir import ops
from padre_compiler.ir.graph import Graph, Node
from padre_compiler.ir.params import param_flops


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int
    params: int

    def __str__(self) -> str:
        return f"{self.flops / 1e6:9.2f} MFLOP  {self.bytes / 1e6:9.2f} MB  {self.params} params"


@dataclass(frozen=True)
class NodeCost:
    flops: int
    bytes: int


def node_flops(g: Graph, node: Node, inputs: tuple[int, ...], dim: int, tokens: int) -> int:
    """FLOPs of `node` reading `inputs` of g at N tokens, its merged parameters' expressions
    included (evaluated once a call: counted once, as for a batch of one)."""
    in_w = [g.node(i).width.at(dim) for i in inputs]
    out = node.width.at(dim) if node.op != "input" else dim
    decls = g.decls
    params = sum(param_flops(expr, lambda name: decls[name].concrete(dim))[1]
                 for _, expr in node.params)
    return ops.flop_rules[node.op](node.a, in_w, out, tokens) + params


def node_cost(g: Graph, nid: int, dim: int, tokens: int) -> NodeCost:
    node = g.node(nid)
    if node.op in ("input", "output", "split", "identity"):  # views: no memory traffic
        return NodeCost(0, 0)
    in_w = [g.node(i).width.at(dim) for i in g.inputs(nid)]
    flops = node_flops(g, node, g.inputs(nid), dim, tokens)
    return NodeCost(flops, ops.node_bytes(in_w, node.width.at(dim), tokens,
                                          g.param_numel(nid, dim)))


def graph_cost(g: Graph, dim: int, tokens: int) -> Cost:
    flops = byts = 0
    for nid in g.topo():
        c = node_cost(g, nid, dim, tokens)
        flops += c.flops
        byts += c.bytes
    return Cost(flops, byts, sum(prod(d.concrete(dim)) for d in g.decls.values()))
