"""The reference interpreter: runs a graph op by op through the reference rule table.

It is the oracle for every backend. Over float64 it checks compiled code numerically; over
object arrays it evaluates exactly (Python integers or fractions) or symbolically (sympy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from padre_compiler.ir import ops
from padre_compiler.ir.graph import Graph
from padre_compiler.ir.ops import EvalContext
from padre_compiler.ir.params import evaluate_param


def run_graph(g: Graph, x: np.ndarray, params: dict[str, np.ndarray],
              ctx: EvalContext | None = None, keep: bool = False,
              post: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
    """Evaluate `g` on x [B, N, D]. Returns the output, or every node's value if `keep`.

    post: applied to every node's value (the symbolic layer expands polynomials there)."""
    ctx = ctx or EvalContext()
    if ctx.dim is None:  # widths proportional to D (expand times = "dim") need it
        ctx = replace(ctx, dim=x.shape[-1])
    values: dict[int, np.ndarray] = {}
    for nid, node, inputs in g.items():
        args = [x] if node.op == "input" else [values[i] for i in inputs]
        resolved = {role: evaluate_param(expr, params.__getitem__, np)
                    for role, expr in node.params}
        values[nid] = ops.reference_rules[node.op](args, resolved, node.a, ctx)
        if post is not None:
            values[nid] = post(values[nid])
    return values if keep else values[g.output_id]


INIT_INPUT_SCALE = 1e-2  # inputs at weights in the init ranges: where low-degree terms lead


def random_params(decls: dict[str, Any], dim: int, seed: int = 0, scale: float = 1.0,
                  init_ranges: bool = False, copies_at_init: bool = False
                  ) -> dict[str, np.ndarray]:
    """float64 parameters drawn like the generated module's default init, but every tensor
    random (biases and scales too), so that no term of the polynomial is silently zero;
    'ones' around 1, scales on copies (decl.copies) too, or, copies_at_init, around 1 / copies
    as the module starts (benchmarks/castling_bf16_state.py: not the checks' draw).
    init_ranges: a tensor with a spec's own init_range drawn uniformly on it instead (where
    training starts; the certificate's second probe and the fuzzer's "init" regime draw so, at
    inputs scaled by INIT_INPUT_SCALE)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, decl in decls.items():
        shape = decl.concrete(dim)
        if init_ranges and decl.init_range is not None:
            out[name] = rng.uniform(*decl.init_range, shape)
            continue
        fan = decl.fan_in.at(dim) if decl.fan_in is not None else 1
        std = scale / np.sqrt(fan) if decl.init == "uniform" else scale * 0.5
        base = 1.0 if decl.init == "ones" else 0.0
        if copies_at_init and decl.copies is not None:
            base /= decl.copies.at(dim)
        out[name] = base + std * rng.standard_normal(shape)
    return out
