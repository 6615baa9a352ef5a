"""Graph cost from the cost rules: FLOPs and bytes moved, at a given width D and N tokens."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from padre_compiler.ir import ops
from padre_compiler.ir.graph import Graph


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


def node_cost(g: Graph, nid: int, dim: int, tokens: int) -> NodeCost:
    node = g.node(nid)
    in_w = [g.node(i).width.at(dim) for i in g.inputs(nid)]
    out = node.width.at(dim) if node.op != "input" else dim
    flops = ops.flop_rules[node.op](node.a, in_w, out, tokens)
    if node.op in ("input", "output", "split", "identity"):  # views: no memory traffic
        return NodeCost(0, 0)
    return NodeCost(flops, ops.node_bytes(in_w, out, tokens, g.param_numel(nid, dim)))


def graph_cost(g: Graph, dim: int, tokens: int) -> Cost:
    flops = byts = 0
    for nid in g.topo():
        c = node_cost(g, nid, dim, tokens)
        flops += c.flops
        byts += c.bytes
    return Cost(flops, byts, sum(prod(d.concrete(dim)) for d in g.decls.values()))
