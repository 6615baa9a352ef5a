"""Polynomial surrogates of the non-polynomial functions the instances use.

A surrogate is stored in the Chebyshev basis on [lo, hi] whatever basis built it: the monomial
basis is numerically unstable beyond low degree (PADRe §4; Mamba's exp on [-37, 0] diverges in
Taylor form), so the graph only ever evaluates Chebyshev series (Clenshaw's recurrence).

  chebyshev: the interpolant at the order+1 Chebyshev points of the first kind on [lo, hi]
  taylor:    the Taylor polynomial at the interval's midpoint, re-expressed in Chebyshev form
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import sympy as sp
from numpy.polynomial import chebyshev as C

_t = sp.Symbol("t")
# name -> (numpy function, sympy expression in t, natural domain)
FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], sp.Expr, tuple[float, float]]] = {
    "exp": (np.exp, sp.exp(_t), (-math.inf, math.inf)),
    # erfc(-x/√2) = 1 + erf(x/√2), without the sum's cancellation for x << 0
    "gelu": (lambda x: 0.5 * x * np.vectorize(math.erfc)(-x / math.sqrt(2)),
             _t / 2 * (1 + sp.erf(_t / sp.sqrt(2))), (-math.inf, math.inf)),
    "silu": (lambda x: x / (1 + np.exp(-x)), _t / (1 + sp.exp(-_t)), (-math.inf, math.inf)),
    "softplus": (lambda x: np.logaddexp(0, x), sp.log(1 + sp.exp(_t)), (-math.inf, math.inf)),
    "arccos": (np.arccos, sp.acos(_t), (-1.0, 1.0)),
}
BASES = ("chebyshev", "taylor")


def surrogate_coeffs(fn: str, order: int, lo: float, hi: float, basis: str) -> tuple[float, ...]:
    """Chebyshev coefficients (on [lo, hi]) of the degree-`order` surrogate of `fn`."""
    f, expr, _ = FUNCTIONS[fn]
    if basis == "chebyshev":
        coeffs = C.chebinterpolate(lambda u: f(lo + (u + 1) * (hi - lo) / 2), order)
    else:
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        # f(mid + half * u) = sum_k f^(k)(mid) / k! * half^k * u^k
        taylor = sp.series(expr.subs(_t, mid + half * _t), _t, 0, order + 1).removeO()
        mono = [float(taylor.coeff(_t, k)) for k in range(order + 1)]
        coeffs = C.poly2cheb(mono)
    return tuple(float(c) for c in coeffs)


def surrogate_error(fn: str, coeffs: tuple[float, ...], lo: float, hi: float) -> float:
    """Max |f - p| on a fine grid of [lo, hi]."""
    x = np.linspace(lo, hi, 2001)
    u = (2 * x - lo - hi) / (hi - lo)
    return float(np.max(np.abs(FUNCTIONS[fn][0](x) - C.chebval(u, coeffs))))
