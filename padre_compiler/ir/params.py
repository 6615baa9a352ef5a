"""Parameters: declarations (shape, init) and parameter expressions.

A node reads its parameters through `ParamExpr`s. A spec's own nodes read leaves (one trainable
tensor each, named after the spec); passes that merge linear maps build products and
concatenations of leaves, which backends evaluate once per call, outside the token loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from padre_compiler.ir.width import Width


@dataclass(frozen=True)
class ParamDecl:
    """A trainable tensor. `init` is its op's default, 'uniform' (bound 1/sqrt(fan_in)),
    'ones' or 'zeros'; `init_range` = (lo, hi), a spec's own choice (`dsl` init=...), makes the
    module draw it uniformly on [lo, hi] instead. `copies`: 'ones' scales copies of a tensor
    that a contract sums back (expand -> diagonal -> contract), so it starts at 1 / copies and
    the chain as x, not copies * x. `random_params` draws from `init` unless asked for the
    ranges (the code certificate's second probe)."""

    shape: tuple[Width, ...]
    init: str
    fan_in: Width | None = None
    init_range: tuple[float, float] | None = None
    copies: Width | None = None

    def concrete(self, dim: int) -> tuple[int, ...]:
        return tuple(w.at(dim) for w in self.shape)


@dataclass(frozen=True)
class ParamExpr:
    """fn is one of PARAM_FNS; args are ParamExprs, except a leaf's single arg, its name.

    leaf(name)          the tensor itself
    matmul(a, b)        a @ b
    mul(a, b)           a * b, broadcasting trailing axes
    scale_cols(w, s)    w * s[None, :]        (w is [out, in]: x -> (x * s) @ w.T)
    scale_rows(w, s)    s[:, None] * w        ((x @ w.T) * s)
    add(a, b)           a + b
    concat(a, b, ...)   concatenation along axis 0
    sum_copies(w, heads, times, keep, width)
                        per head, w summed over the copies an expand made: w holds one value
                        per slot of contract(keep, heads, times) (keep = tile: slots (g, j, m),
                        replicate: (g, c, j)) of an input of `width` (a Width) -> [width]
    """

    fn: str
    args: tuple[Any, ...]

    @staticmethod
    def leaf(name: str) -> ParamExpr:
        return ParamExpr("leaf", (name,))

    def leaves(self) -> list[str]:
        if self.fn == "leaf":
            return [self.args[0]]
        return [name for a in self.operands() for name in a.leaves()]

    def operands(self) -> list[ParamExpr]:
        """The parameter-expression arguments (sum_copies also carries its layout)."""
        return [a for a in self.args if isinstance(a, ParamExpr)]


PARAM_FNS = ("leaf", "matmul", "mul", "scale_cols", "scale_rows", "add", "concat", "sum_copies")


def _copies_layout(n: int, heads: int, times: int | None) -> tuple[int, int]:
    """(copies T, head width e) of a sum_copies operand with n entries."""
    if times is None:  # square: T = e, n = heads e^2
        e = round((n // heads) ** 0.5)
        return e, e
    return times, n // (heads * times)


def evaluate_param(expr: ParamExpr, leaf: Callable[[str], Any], lib: Any) -> Any:
    """Evaluate `expr` with array library `lib` (numpy or torch); `leaf(name)` gives tensors."""
    if expr.fn == "leaf":
        return leaf(expr.args[0])
    a = [evaluate_param(x, leaf, lib) for x in expr.operands()]
    match expr.fn:
        case "sum_copies":
            heads, times, keep = expr.args[1:4]
            t, e = _copies_layout(a[0].shape[0], heads, times)
            if keep == "tile":
                return a[0].reshape(heads, t, e).sum(1).reshape(-1)
            return a[0].reshape(heads, e, t).sum(2).reshape(-1)
        case "matmul":
            return a[0] @ a[1]
        case "mul":
            return a[0] * a[1]
        case "scale_cols":
            return a[0] * a[1][None, :]
        case "scale_rows":
            return a[1][:, None] * a[0]
        case "add":
            return a[0] + a[1]
        case "concat":
            return lib.concatenate(a, 0) if hasattr(lib, "concatenate") else lib.cat(a, 0)
    raise ValueError(f"unknown parameter function '{expr.fn}'")


def param_flops(expr: ParamExpr, shape: Callable[[str], tuple[int, ...]]
                ) -> tuple[tuple[int, ...], int]:
    """(shape, FLOPs) of evaluating `expr` once, `shape(name)` a leaf's shape: a multiply-add
    counts 2, an elementwise product or sum 1 an element, a concatenation none."""
    if expr.fn == "leaf":
        return shape(expr.args[0]), 0
    parts = [param_flops(x, shape) for x in expr.operands()]
    shapes, below = [s for s, _ in parts], sum(f for _, f in parts)
    match expr.fn:
        case "matmul":  # [m, k] @ [k, n] or [m, k] @ [k]
            (m, k), rest = shapes[0], shapes[1][1:]
            return (m, *rest), below + 2 * m * k * math.prod(rest)
        case "mul" | "add":
            out = tuple(np.broadcast_shapes(*shapes))
            return out, below + math.prod(out)
        case "scale_cols" | "scale_rows":
            return shapes[0], below + math.prod(shapes[0])
        case "concat":
            return (sum(s[0] for s in shapes), *shapes[0][1:]), below
        case "sum_copies":  # [heads T e] -> [heads e]: T - 1 additions an output
            heads, times = expr.args[1:3]
            n = math.prod(shapes[0])
            kept = heads * _copies_layout(n, heads, times)[1]
            return (kept,), below + n - kept
    raise ValueError(f"unknown parameter function '{expr.fn}'")


def render_param(expr: ParamExpr, leaf: Callable[[str], str]) -> str:
    """Python source computing `expr` with torch tensors."""
    if expr.fn == "leaf":
        return leaf(expr.args[0])
    a = [render_param(x, leaf) for x in expr.operands()]
    match expr.fn:
        case "sum_copies":
            heads, times, keep, width = expr.args[1:]
            w = width.render("D")
            e = f"{w if w.isidentifier() or w.isdigit() else f'({w})'} // {heads}"
            t = e if times is None else str(times)
            shape, axis = (f"{heads}, {t}, {e}", 1) if keep == "tile" else \
                (f"{heads}, {e}, {t}", 2)
            return f"{a[0]}.view({shape}).sum({axis}).reshape(-1)"
        case "matmul":
            return f"({a[0]} @ {a[1]})"
        case "mul":
            return f"({a[0]} * {a[1]})"
        case "scale_cols":
            return f"({a[0]} * {a[1]}[None, :])"
        case "scale_rows":
            return f"({a[1]}[:, None] * {a[0]})"
        case "add":
            return f"({a[0]} + {a[1]})"
        case "concat":
            return f"torch.cat([{', '.join(a)}], 0)"
    raise ValueError(f"unknown parameter function '{expr.fn}'")
