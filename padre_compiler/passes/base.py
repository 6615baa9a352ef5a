"""Pass infrastructure: a pass is a named rewrite of a graph that preserves its polynomial.

Each pass mutates a graph in place and returns how many rewrites it made; `run_pipeline`
runs the passes in order, each to a fixed point, records the graph's cost after each, and
logs one line per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from padre_compiler.ir.cost import Cost, graph_cost
from padre_compiler.ir.graph import Graph

log = logging.getLogger("padre_compiler.passes")


@dataclass(frozen=True)
class PassContext:
    """What cost-driven passes may assume: model width and a typical token count."""

    dim: int
    tokens: int
    grid: tuple[int, int] | None = None


@dataclass(frozen=True)
class Pass:
    name: str
    doc: str
    run: Callable[[Graph, PassContext], int]


@dataclass(frozen=True)
class PassRecord:
    name: str
    rewrites: int
    cost: Cost
    graph: Graph


PASSES: dict[str, Pass] = {}


def register_pass(name: str, doc: str) -> Callable[[Callable[[Graph, PassContext], int]], Pass]:
    def deco(fn: Callable[[Graph, PassContext], int]) -> Pass:
        PASSES[name] = Pass(name, doc, fn)
        return PASSES[name]

    return deco


def run_pipeline(g: Graph, ctx: PassContext, names: tuple[str, ...]) -> tuple[Graph,
                                                                              list[PassRecord]]:
    """Run the named passes in order, each to a fixed point; returns the new graph and a
    record per pass (the input graph is left unchanged)."""
    g = g.copy()
    records = [PassRecord("spec", 0, graph_cost(g, ctx.dim, ctx.tokens), g.copy())]
    for name in names:
        total = 0
        rounds = 4 * len(g.g) + 16  # a pass rewrites a bounded number of times a node
        for _ in range(rounds):
            n = PASSES[name].run(g, ctx)
            total += n
            if n == 0:
                break
        else:
            raise RuntimeError(f"pass {name} did not reach a fixed point in {rounds} rounds")
        g.prune()
        records.append(PassRecord(name, total, graph_cost(g, ctx.dim, ctx.tokens), g.copy()))
        log.info("pass %-24s %3d rewrites  %s", name, total, records[-1].cost)
    return g, records
