"""The graph IR: a networkx MultiDiGraph of typed nodes (x ⊙ x has two edges x -> ⊙).

Each graph node carries a frozen `Node` (op, attributes, output width, parameter expressions,
a human label); edge (u, v, port=k) says u is the k-th input of v. There is exactly one `input`
node (X, shape [B, N, D]) and one `output` node.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from padre_compiler.errors import ShapeError
from padre_compiler.ir.params import ParamDecl, ParamExpr
from padre_compiler.ir.width import Width


def freeze(attrs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


@dataclass(frozen=True)
class Node:
    op: str
    attrs: tuple[tuple[str, Any], ...]
    width: Width
    params: tuple[tuple[str, ParamExpr], ...] = ()
    label: str = ""

    @property
    def a(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def p(self) -> dict[str, ParamExpr]:
        return dict(self.params)

    def key(self, inputs: tuple[int, ...]) -> tuple[Any, ...]:
        """Structural identity, used by CSE: equal keys compute equal tensors."""
        return (self.op, self.attrs, self.params, inputs)


@dataclass
class Graph:
    layout: str  # "sequence" or "grid2d"
    decls: dict[str, ParamDecl] = field(default_factory=dict)  # trainable tensors by name
    g: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    _next: int = 0

    # construction -----------------------------------------------------------------------------
    def add(self, node: Node, inputs: list[int] | tuple[int, ...] = ()) -> int:
        nid = self._next
        self._next += 1
        self.g.add_node(nid, node=node)
        for port, src in enumerate(inputs):
            self.g.add_edge(src, nid, port=port)
        return nid

    def copy(self) -> Graph:
        return Graph(self.layout, dict(self.decls), self.g.copy(), self._next)

    # queries ----------------------------------------------------------------------------------
    def node(self, nid: int) -> Node:
        return self.g.nodes[nid]["node"]

    def set_node(self, nid: int, node: Node) -> None:
        self.g.nodes[nid]["node"] = node

    def inputs(self, nid: int) -> tuple[int, ...]:
        edges = sorted(self.g.in_edges(nid, data="port"), key=lambda e: e[2])
        return tuple(src for src, _, _ in edges)

    def users(self, nid: int) -> list[int]:
        """Distinct nodes reading `nid` (a node reading it twice is listed once)."""
        return sorted(set(self.g.successors(nid)))

    def find(self, op: str) -> list[int]:
        return [n for n in self.topo() if self.node(n).op == op]

    @property
    def input_id(self) -> int:
        (nid,) = self.find("input")
        return nid

    @property
    def output_id(self) -> int:
        (nid,) = self.find("output")
        return nid

    def topo(self) -> list[int]:
        """Deterministic topological order (ties broken by node id)."""
        return list(nx.lexicographical_topological_sort(self.g))

    def items(self) -> Iterator[tuple[int, Node, tuple[int, ...]]]:
        for nid in self.topo():
            yield nid, self.node(nid), self.inputs(nid)

    def param_numel(self, nid: int, dim: int) -> int:
        """Elements of the trainable tensors node `nid` reads."""
        leaves = {leaf for _, expr in self.node(nid).params for leaf in expr.leaves()}
        return sum(math.prod(self.decls[leaf].concrete(dim)) for leaf in leaves)

    # rewriting --------------------------------------------------------------------------------
    def replace_uses(self, old: int, new: int) -> None:
        """Every edge old -> user becomes new -> user (same port)."""
        for _, user, key, port in list(self.g.out_edges(old, keys=True, data="port")):
            self.g.remove_edge(old, user, key)
            self.g.add_edge(new, user, port=port)

    def prune(self) -> int:
        """Remove nodes from which the output is unreachable; returns how many."""
        live = nx.ancestors(self.g, self.output_id) | {self.output_id}
        dead = [n for n in self.g.nodes if n not in live and self.node(n).op != "input"]
        self.g.remove_nodes_from(dead)
        return len(dead)

    def relabel(self, nid: int, **changes: Any) -> None:
        self.set_node(nid, replace(self.node(nid), **changes))


def validate_dim(g: Graph, dim: int) -> None:
    """Every width is a positive integer at this D and every per-head op's input splits into
    its heads; raises ShapeError naming the op otherwise."""
    for _, node, inputs in g.items():  # heads first: an unsplittable input makes a
        heads = node.a.get("heads")      # width like D*D//heads fractional, a vaguer error
        if heads and inputs and g.node(inputs[0]).width.at(dim) % heads:
            raise ShapeError(f"{node.op} '{node.label}': width {g.node(inputs[0]).width.at(dim)} "
                             f"at dim={dim} does not split into heads={heads}; use a dim "
                             f"divisible by {heads}")
        times = node.a.get("times") if node.op == "contract" else None
        if times and inputs and g.node(inputs[0]).width.at(dim) % ((heads or 1) * times):
            raise ShapeError(f"contract '{node.label}': width {g.node(inputs[0]).width.at(dim)} "
                             f"at dim={dim} is not heads * times * e (heads={heads or 1}, "
                             f"times={times}); make the contracted width a multiple of both")
        node.width.at(dim)


def dim_rules(g: Graph) -> list[tuple[int, int, int]]:
    """`validate_dim` as arithmetic a generated constructor runs: (n, p, m) with
    n * D**p % m == 0 for each width n D^p / d that depends on D (m = d: an integer), and for
    each per-head op's input (m = d * heads, times its copies for a contract). Widths that do
    not depend on D, and rules with m dividing n, hold at every D or at none."""
    rules = set()
    for _, node, inputs in g.items():
        if node.width.power and node.width.coef.denominator > 1:
            rules.add((node.width.coef.numerator, node.width.power,
                       node.width.coef.denominator))
        split = (node.a.get("heads") or 1) * (
            node.a.get("times") or 1 if node.op == "contract" else 1)
        if split > 1 and inputs and (w := g.node(inputs[0]).width).power:
            rules.add((w.coef.numerator, w.power, w.coef.denominator * split))
    return sorted(r for r in rules if r[0] % r[2])  # n % m == 0 holds at every D


def width_step(g: Graph) -> int:
    """Widths that multiples of this split into every op's heads."""
    return math.lcm(1, *(g.node(n).a.get("heads") or 1 for n in g.g.nodes))


def is_valid_dim(g: Graph, dim: int) -> bool:
    """`validate_dim` as a test."""
    try:
        validate_dim(g, dim)
    except ShapeError:
        return False
    return True
