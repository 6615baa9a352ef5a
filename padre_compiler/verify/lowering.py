"""The eager twin's lowering checked against the reference interpreter, which shares no code
with it.

The eager twin (the spec lowered op by op to PyTorch) sets the numeric certificate's and the
fuzzer's allowances: a compiled module may be off by a few times the twin's error. But the twin
calls the same helpers as every compiled module (`_normalize`, `_chebyshev`, `_dwconv2d`, ...):
a wrong helper makes both wrong alike, and an allowance measured on the twin would grow to
admit it. So the twin itself is held, in float64, to the numpy reference (`run_graph`):

    truth    = run_graph in long double (x86's 64-bit significand: 11 bits past float64)
    e_ref    = float64's own error at this input, relative to max|truth|: the largest of the
               reference's error at x, its error at x moved by 1-2 ulp, and how far that move
               shifts the truth (as fuzz's gradient rule samples it)
    e_twin   = |twin in float64      - truth| / max|truth|
    e_twin  <= max(1e-10, 16 e_ref)

16: the twin and the reference round in different orders, and where the graph cancels
(mamba's degree-403 surrogate polynomials amplify rounding by 1e7-1e17) their errors spread by
more than three samples show; 1e-10: a well-conditioned graph's float64 error is a few ulp, a
wrong lowering's is of the output's size. Where 16 e_ref >= 1, float64 cannot resolve the
output at this input (mamba at weights rounded to bfloat16) and the check judges nothing.
Elements where the truth is not finite are not compared. Where long double is no wider than
float64 (some non-x86 platforms) there is no truth to measure against, and the check says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from padre_compiler.backends.reference import run_graph
from padre_compiler.ir.graph import Graph
from padre_compiler.ir.ops import EvalContext

WIDE = bool(np.finfo(np.longdouble).eps < np.finfo(np.float64).eps)
FLOOR = 1e-10  # relative: what a well-conditioned graph's float64 error stays under
MARGIN = 16  # the twin's error over float64's own, at most


@dataclass(frozen=True)
class Lowering:
    """The float64 twin's error and its allowance, relative to max|truth|."""

    error: float
    allowed: float

    @property
    def ok(self) -> bool:
        """Within the allowance (NaN is not), or not judged: float64 itself is off by the
        output's size."""
        return self.allowed >= 1 or self.error <= self.allowed


def check_lowering(twin_out: np.ndarray, graph: Graph, x: np.ndarray,
                   params: dict[str, np.ndarray], grid: tuple[int, int] | None
                   ) -> Lowering | None:
    """The twin's float64 output `twin_out` at (x, params) under the rule above; None where
    long double is no wider than float64."""
    if not WIDE:
        return None
    ctx = EvalContext(grid=grid)
    wide = {k: v.astype(np.longdouble) for k, v in params.items()}
    truth = np.asarray(run_graph(graph, x.astype(np.longdouble), wide, ctx))
    finite = np.isfinite(truth)
    if not finite.any():
        return Lowering(0.0, 0.0)
    scale = max(float(np.abs(truth[finite]).max()), np.finfo(np.float64).tiny)
    # float64's own error: the reference's at x, and at x moved by 1-2 ulp (beside how far
    # that move shifts the truth): one sample of a cancelling sum understates the spread
    sign = np.random.default_rng(0).choice([-1.0, 1.0], size=x.shape)
    nudged = x * (1 + 2 * np.finfo(np.float64).eps * sign)
    moved = np.asarray(run_graph(graph, nudged.astype(np.longdouble), wide, ctx))
    samples = [run_graph(graph, x, params, ctx) - truth,
               run_graph(graph, nudged, params, ctx) - moved, moved - truth]
    e_ref = max(_largest(np.abs(d), finite) for d in samples) / scale
    e_twin = _largest(np.abs(twin_out - truth), finite) / scale
    return Lowering(e_twin, max(FLOOR, MARGIN * e_ref))


def _largest(values: np.ndarray, where: np.ndarray) -> float:
    """max over `where` (inf where a value there is not finite)."""
    picked = values[where]
    return float(picked.max()) if np.isfinite(picked).all() else np.inf
