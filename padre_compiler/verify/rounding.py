"""Rounding bounds: element by element, how far an evaluation of a graph in a dtype may be from
its float64 reference at the same (rounded) inputs and weights: a first-order forward error
analysis, one rule per op.

The evaluation model, of a spec's graph (every parameter a trainable tensor, exact: the
reference takes the rounded weights): each op rounds its output to the dtype once (unit
roundoff u = eps / 2); its sums over tokens, channels or taps accumulate in float32 (float64
for float64 tensors, unit u_acc), at most N + (input width) terms; an op of k terms (add,
scaled_sum) may round its partial sums to the dtype too, and a map with a bias its product
before the bias. The eager twin computes so. A compiled module fuses ops (rounding less
often) and folds weights (rounding their products once more); tests hold it within the bound
for every bundled spec in bf16, fp16 and fp32 on the CPU (a CUDA GEMM that reduces fp16 in
fp16 is outside the model). The bound decides which elements the fuzzer holds to the bound
itself instead of to the eager twin's error (those past an undecided normalisation, below);
elsewhere it is never an allowance.

The bound E of a node's output from its inputs' values x and bounds E_in:

    multilinear ops (every op but normalize and poly):
        P = f(|x| + E_in, |w|) - f(|x|, |w|)               propagated (`Site.propagated`)
        E = P + u (|f(x, w)| + P)                            the output's rounding
          + (u r + u_acc n) (f(|x|, |w|) + P)                r partial sums', n terms summed
      (long_conv adds its FFT's normwise bound, u_acc 4 log2(m) (|x_c|_2 |h_c|_1 +
      |x_c|_1 |h_c|_2) per batch row and channel; linear_attention u^2 f(|x|, |w|), its
      state in two parts of the dtype in the Triton kernels' 16-bit products)
    poly p:       E = sup |p'| within dt of the argument t, times dt (the input's error and
                  the argument's rounding), + the Clenshaw recurrence's rounding at the
                  computed argument t' (within dt of t): each step's error eta_k moves p by
                  eta_k T_k(t'), + the output's, u (|p| + that sup dt)
    normalize:    |v/(|v| + eps) - w/(|w| + eps)| <= 2 |e| / (|v| - |e| + eps) for w = v + e,
                  with the row's (or column's) norms of v and E_in; a 1-channel row keeps
                  its sign while |e| < |v|, and moves by eps |e| / ((|v| - |e| + eps)(|v| + eps))

Each rounding is of the computed value, which the carried error P moves off the exact one, so
the bound holds where the inputs' errors are not small (past an undecided normalisation,
below). It is first order in the unit roundoffs (a rounding of an error's rounding is left
out), of rounding to normal numbers alone: a result that overflows the dtype's range is
beyond it (mamba's degree-403 surrogate in float16, where the bound itself passes 1e47), and
so is a value below its normal range, which rounds by up to half the smallest subnormal, not
by u of itself (a constant of 1e-165 flushed to 0).

A normalisation whose bound reaches 2 cannot be decided by the dtype: the row's direction may
come out anything (an l2-normalised 1-channel head is the sign of an entry that may cancel
below the dtype's resolution). Its bound is `undecided_error`: inf marks every element that
depends on it (inf propagates through the rules; `undecided` gives that mask), and 2 carries
the bound on past it, since a normalised row, v / (|v| + eps) for any eps >= 0, is at most a
unit vector, and two differ by at most 2 in the norm and in every element (the one exception:
a row computed as exactly 0 at eps = 0, which is 0 / 0). The fuzzer's output rule judges those
elements against that bound, not against the eager twin's error, which says nothing where its
rounding happened to get a sign right.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from numpy.polynomial import chebyshev

from padre_compiler.backends.reference import run_graph
from padre_compiler.ir import ops
from padre_compiler.ir.graph import Graph
from padre_compiler.ir.ops import EvalContext
from padre_compiler.ir.params import evaluate_param
from padre_compiler.ir.registry import RuleTable

rounding_rules = RuleTable("rounding")


@dataclass(frozen=True)
class Units:
    """Unit roundoffs: `store` of the dtype the tensors are held in, `acc` of its sums."""

    store: float
    acc: float

    @staticmethod
    def of(dtype: torch.dtype) -> Units:
        acc = torch.promote_types(dtype, torch.float32)
        return Units(torch.finfo(dtype).eps / 2, torch.finfo(acc).eps / 2)


@dataclass(frozen=True)
class Site:
    """What a rule sees of one node: its op, inputs' float64 values and bounds, its output's
    value and its resolved parameters (exact)."""

    op: str
    attrs: dict
    xs: list[np.ndarray]
    errs: list[np.ndarray]
    out: np.ndarray
    params: dict[str, np.ndarray]
    ctx: EvalContext
    units: Units
    undecided_error: float = np.inf  # an undecided normalisation's bound (module docstring)

    def evaluate(self, xs: list[np.ndarray], params: dict[str, np.ndarray]) -> np.ndarray:
        return ops.reference_rules[self.op](xs, params, self.attrs, self.ctx)

    @functools.cached_property
    def magnitude(self) -> np.ndarray:
        """f(|x|, |w|): the sum of the absolute values of the terms of every output element."""
        return self.evaluate([np.abs(x) for x in self.xs],
                             {k: np.abs(v) for k, v in self.params.items()})

    def propagated(self) -> np.ndarray:
        """(f(|x| + t E_in, |w|) - f(|x|, |w|)) / t for a t >= 1: the inputs' errors carried
        through a multilinear op (inf where an input's bound is).
        The first-order terms are exact, the higher ones counted t^(j-1) times over: an upper
        bound. t lifts the errors to 1e-6 of the values, where the float64 difference keeps
        their digits (at t = 1 a float64 tensor's errors, 1e-16 of its values, would not)."""
        finite = max(np.abs(e[np.isfinite(e)]).max(initial=0.0) for e in self.errs)
        if finite == 0.0 and all(np.isfinite(e).all() for e in self.errs):
            return np.zeros_like(self.out)
        values = max(np.abs(v).max(initial=0.0) for v in self.xs)
        t = max(1.0, 1e-6 * values / max(finite, 1e-300))
        grown = self.evaluate([np.abs(x) + t * e for x, e in zip(self.xs, self.errs, strict=True)],
                              {k: np.abs(v) for k, v in self.params.items()})
        with np.errstate(invalid="ignore"):
            return np.maximum(grown - self.magnitude, 0.0) / t

    def terms(self) -> int:
        """A bound on the terms any output element sums: the tokens and the input channels."""
        return self.xs[0].shape[1] + sum(x.shape[-1] for x in self.xs) + 1


Rule = Callable[[Site], np.ndarray]


def _rounded_before(role: str) -> Callable[[Site], int]:
    """One partial result rounded where the op has the parameter `role` (a bias, a skip
    weight): the product is rounded before that term is added."""
    return lambda s: int(role in s.params)


def _multilinear(partials: Callable[[Site], int] = lambda s: 0,
                 accumulates: bool = False, rounds: bool = True) -> Rule:
    """The multilinear rule (module docstring): `partials(site)` partial results rounded to
    the dtype besides the output, sums accumulated in u_acc when `accumulates`, the output
    rounded when `rounds` (a view or a copy is not)."""

    def rule(s: Site) -> np.ndarray:
        bound = carried = s.propagated()
        if rounds:
            bound = bound + s.units.store * (np.abs(s.out) + carried)
        r = partials(s)
        if r or accumulates:
            bound = bound + (s.units.store * r + (s.units.acc * s.terms() if accumulates
                                                  else 0.0)) * (s.magnitude + carried)
        return bound

    return rule


_LONG_CONV_TERMS = _multilinear(_rounded_before("skip"), accumulates=True)


def _long_conv(s: Site) -> np.ndarray:
    # y = irfft(rfft(x) rfft(h)) of size m: each transform's error is normwise, u_acc log2(m)
    # of its input's 2-norm (times sqrt(m) unnormalised), and each spectrum's entries are at
    # most the other's 1-norm, so |y_err[:, c]|_2 <= u_acc 4 log2(m) (|x_c|_2 |h_c|_1 +
    # |x_c|_1 |h_c|_2) per batch row, x the computed input; then y + x * skip in the dtype
    # rounds once more
    x, n = np.abs(s.xs[0]) + s.errs[0], s.xs[0].shape[1]  # the computed input's size
    m = 1 << (2 * max(n, 1) - 1).bit_length()
    h = s.params["filter"][:, :n]
    fft = 4 * np.log2(m) * s.units.acc * (
        np.linalg.norm(x, axis=1, keepdims=True) * np.abs(h).sum(axis=1)
        + np.abs(x).sum(axis=1, keepdims=True) * np.linalg.norm(h, axis=1))
    return _LONG_CONV_TERMS(s) + fft


def _poly(s: Site) -> np.ndarray:
    # p(x) = sum_k c_k T_k(t), t = (2x - lo - hi) / (hi - lo), by Clenshaw in the dtype:
    # b_k = c_k + 2t b_{k+1} - b_{k+2}, p = c_0 + t b_1 - b_2, all at the computed argument t',
    # within dt of t. dt holds the input's error and the argument's own rounding: fl(fl(2x' -
    # fl(lo + hi)) / fl(hi - lo)) is within u (3|t'| + |lo + hi| / |hi - lo|) of t'.
    # |T_k(t')| <= T_k(tau), tau = max(1, |t| + dt), so sum_k |d_k| T_k(tau) bounds |dp/dt|
    # there (d: p's derivative). An error eta_k made in b_k moves p by eta_k T_k(t'), as a
    # change of c_k would, with |eta_k| <= u (|c_k| + |2t' b_{k+1}| + |c_k + 2t' b_{k+1}| +
    # |b_k|): c_k rounded, then the recurrence's three operations. The b_k at t' are within r_k
    # of those at t (midpoint and radius: |2t' b' - 2t b| <= 2|t| r + 2 dt (|b| + r)), and
    # within dt sup |b_k'| <= dt sum_{j>k} |c_j| U'_{j-k}(tau) (b_k = sum_{j>=k} c_j U_{j-k};
    # |U_n'| <= U_n'(tau) within tau), which caps the radius where its recurrence alone would
    # grow as (|t| + sqrt(t^2 + 1))^k, exponentially in the degree at any |t| > 0.
    x, e, u = s.xs[0], s.errs[0], s.units.store
    lo, hi = s.attrs["lo"], s.attrs["hi"]
    c = np.asarray(s.attrs["coeffs"], dtype=float)
    t = (2 * x - lo - hi) / (hi - lo)
    moved = 2 * e / abs(hi - lo)
    dt = moved + u * (3 * (np.abs(t) + moved) + abs((lo + hi) / (hi - lo)))
    tau = np.maximum(1.0, np.abs(t) + dt)

    def times_t(b: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return t * b, np.abs(t) * r + dt * (np.abs(b) + r)  # t' b' within the radius of t b

    slope = chebyshev.chebval(tau, np.abs(chebyshev.chebder(c))) if len(c) > 1 else 0.0 * t
    growth = np.arccosh(tau)  # T_k(tau) = cosh(k growth)
    b1 = b2 = r1 = r2 = np.zeros_like(t)
    m1 = m2 = d1 = d2 = np.zeros_like(t)  # sum_{j>=k} |c_j| U_{j-k}(tau) and its derivative
    recurrence = np.zeros_like(t)
    for k in range(len(c) - 1, 0, -1):
        step, radius = times_t(2 * b1, 2 * r1)
        m1, m2, d1, d2 = abs(c[k]) + 2 * tau * m1 - m2, m1, 2 * m1 + 2 * tau * d1 - d2, d1
        b1, b2, r1, r2 = c[k] + step - b2, b1, np.minimum(radius + r2, dt * d1), r1
        eta = u * (abs(c[k]) + np.abs(step) + np.abs(c[k] + step) + 2 * radius + np.abs(b1) + r1)
        recurrence = recurrence + eta * np.cosh(k * growth)
    last, radius = times_t(b1, r1)
    recurrence = recurrence + u * (abs(c[0]) + np.abs(last) + np.abs(c[0] + last) + 2 * radius)
    return slope * dt + recurrence + u * (np.abs(s.out) + slope * dt)


def _normalize(s: Site) -> np.ndarray:
    # per row (l1_tokens: per column over the tokens) v with error e, |e| <= |E_in|:
    # |v/(|v|+eps) - w/(|w|+eps)| <= 2|e| / (|v| - |e| + eps); both sides are at most unit
    # vectors, so a bound of 2 or more decides nothing: undecided_error
    x, e, eps = s.xs[0], s.errs[0], s.attrs["eps"]
    kind = s.attrs["kind"]
    p = 2 if kind == "l2_rows" else 1
    b, n, w = x.shape
    if kind == "l1_tokens":
        rows, axis = (b, n, w), 1
    else:
        rows, axis = (b, n, s.attrs["heads"], w // s.attrs["heads"]), -1
    v, err = x.reshape(rows), e.reshape(rows)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        nv = np.linalg.norm(v, ord=p, axis=axis, keepdims=True)
        ne = np.linalg.norm(err, ord=p, axis=axis, keepdims=True)
        moved = np.where(2 * ne < nv + eps, 2 * ne / (nv - ne + eps), s.undecided_error)
    length = v.shape[axis]
    if length == 1:  # v / (|v| + eps) = sign(v) |v| / (|v| + eps): where |e| < |v| the sign
        # holds and only the magnitude moves, by eps ||w| - |v|| / ((|w| + eps)(|v| + eps))
        # (0 at eps = 0: the sign is exact)
        with np.errstate(invalid="ignore", divide="ignore"):
            kept = eps * ne / ((nv - ne + eps) * (nv + eps)) if eps else np.zeros_like(ne)
        moved = np.where(ne < nv, kept, moved)
    moved = np.broadcast_to(moved, rows).reshape(b, n, w)
    return moved + (s.units.acc * (length + 2) + s.units.store) * (np.abs(s.out) + moved)


rounding_rules.register("input")(lambda s: np.zeros_like(s.out))
rounding_rules.register("output", "identity", "split", "expand")(_multilinear(rounds=False))
rounding_rules.register("diagonal", "hadamard", "bias")(_multilinear())
rounding_rules.register("add")(_multilinear(lambda s: max(len(s.xs) - 2, 0)))
rounding_rules.register("scaled_sum")(_multilinear(lambda s: len(s.xs) - 1))
_ACCUMULATES = _multilinear(_rounded_before("bias"), accumulates=True)


def _linear_attention(s: Site) -> np.ndarray:
    # q (K^T V) with the state summed in u_acc; the Triton kernels' 16-bit products take the
    # state in two parts of the dtype (`split_dot`), which leave u^2 of each product
    return _ACCUMULATES(s) + s.units.store ** 2 * s.magnitude


rounding_rules.register("dense", "contract", "dwconv1d", "dwconv2d", "global_sum",
                        "prefix_sum")(_ACCUMULATES)
rounding_rules.register("linear_attention")(_linear_attention)
rounding_rules.register("long_conv")(_long_conv)
rounding_rules.register("poly")(_poly)
rounding_rules.register("normalize")(_normalize)


def rounding_bound(g: Graph, x: np.ndarray, params: dict[str, np.ndarray],
                   dtype: torch.dtype, ctx: EvalContext | None = None,
                   undecided_error: float = np.inf) -> np.ndarray:
    """The bound E on |(g evaluated in dtype) - (g in float64)| at the output, element by
    element, for float64 inputs x and params already rounded to dtype, an undecided
    normalisation's rows bounded by `undecided_error` (inf: inf where one is upstream; 2: the
    bound past it; module docstring). g is a spec's graph: a node that reads a folded
    parameter expression (an optimised graph's) is refused."""
    return _Evaluation(g, x, params, ctx).bound(dtype, undecided_error)


class _Evaluation:
    """g's float64 values at x (evaluated once), whose rounding bounds `bound` carries."""

    def __init__(self, g: Graph, x: np.ndarray, params: dict[str, np.ndarray],
                 ctx: EvalContext | None) -> None:
        ctx = ctx or EvalContext()
        self.ctx = ctx if ctx.dim is not None else replace(ctx, dim=x.shape[-1])
        self.g, self.x, self.params = g, x, params
        self.values = run_graph(g, x, params, self.ctx, keep=True)

    def bound(self, dtype: torch.dtype, undecided_error: float) -> np.ndarray:
        g, x, values, units = self.g, self.x, self.values, Units.of(dtype)
        errs: dict[int, np.ndarray] = {}
        for nid, node, inputs in g.items():
            folded = [role for role, expr in node.params if expr.fn != "leaf"]
            if folded:
                raise ValueError(f"rounding_bound takes a spec's graph: node {nid} ({node.op}) "
                                 f"reads {folded[0]} as a folded expression, which rounds too")
            resolved = {role: evaluate_param(expr, self.params.__getitem__, np)
                        for role, expr in node.params}
            site = Site(node.op, node.a,
                        [x] if node.op == "input" else [values[i] for i in inputs],
                        [np.zeros_like(x)] if node.op == "input" else [errs[i] for i in inputs],
                        values[nid], resolved, self.ctx, units, undecided_error)
            with np.errstate(invalid="ignore", over="ignore"):
                bound = rounding_rules[node.op](site)
                errs[nid] = np.where(np.isnan(bound), np.inf, bound)
        return errs[g.output_id]


UNIT_VECTORS_APART = 2.0  # the most two normalised rows differ by, in any element


@dataclass(frozen=True)
class Undecided:
    """The output elements that depend on a normalisation the dtype cannot decide (`mask`),
    the rounding bound carried past it (`bound`, finite where the reference is), and whether
    such an element may be the spec's 0 / 0 (every normalisation's eps is 0: a row rounded to
    exactly 0 divides by its norm, 0), where a non-finite result is the spec's too."""

    mask: np.ndarray
    undefined: bool
    bound: np.ndarray

    def beyond(self, out: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """The undecided elements, where `ref` is finite, at which `out` is off by more than
        the bound; a non-finite `out` is beyond it unless the spec may be 0 / 0 there."""
        with np.errstate(invalid="ignore"):
            within = np.abs(out - ref) <= self.bound
        admitted = within | (self.undefined & ~np.isfinite(out))
        return self.mask & np.isfinite(ref) & ~admitted


def undecided(g: Graph, x: np.ndarray, params: dict[str, np.ndarray], dtype: torch.dtype,
              ctx: EvalContext | None = None) -> Undecided | None:
    """The undecided output elements and the bound past them, or None for a graph without
    normalisations, whose bound is not evaluated (there an infinite bound would only mean
    that it overflowed)."""
    norms = [node.a["eps"] for _, node, _ in g.items() if node.op == "normalize"]
    if not norms:
        return None
    evaluation = _Evaluation(g, x, params, ctx)
    return Undecided(~np.isfinite(evaluation.bound(dtype, np.inf)),
                     all(eps == 0 for eps in norms),
                     evaluation.bound(dtype, UNIT_VECTORS_APART))
