"""Arithmetic in the prime field GF(p) on numpy int64 arrays.

`GF` is an ndarray subclass whose ufuncs reduce mod P, so the reference rule table (which uses
only +, -, *, /, matmul, sums and slicing) evaluates a graph exactly over GF(P) at realistic
sizes with numpy's C loops. P < 2^25: a product of two elements is < 2^50, and a dot product of
up to 2^13 terms stays below 2^63 before its reduction.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

P = 33_554_393  # the largest prime below 2^25
MAX_DOT = 1 << 13  # longest dot product summed in int64 before reduction


def element(v: int | float | Fraction) -> int:
    """An integer, float or fraction as an element of GF(P) (floats are exact binary rationals)."""
    f = Fraction(v)
    if f.denominator % P == 0:
        raise ZeroDivisionError(f"{v} has no image in GF({P})")
    return f.numerator * pow(f.denominator, P - 2, P) % P


def _inverse(a: np.ndarray) -> np.ndarray:
    """a^(P-2) mod P elementwise (Fermat), by square-and-multiply on int64."""
    if np.any(a % P == 0):
        raise ZeroDivisionError("division by zero in GF(P)")
    result = np.ones_like(a)
    base = a % P
    e = P - 2
    while e:
        if e & 1:
            result = result * base % P
        base = base * base % P
        e >>= 1
    return result


class GF(np.ndarray):
    """int64 array of GF(P) elements; arithmetic ufuncs reduce mod P."""

    def __new__(cls, values: Any) -> GF:
        arr = np.array(values, dtype=np.int64)
        np.remainder(arr, P, out=arr)  # keeps 0-d arrays as arrays
        return arr.view(cls)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        args = [np.asarray(x).view(np.ndarray) if isinstance(x, GF)
                else _lift(x) for x in inputs]
        if ufunc is np.true_divide:
            out = args[0] * _inverse(np.asarray(args[1])) % P
        elif ufunc is np.matmul:
            out = _matmul(args[0], args[1])
        elif ufunc in (np.add, np.subtract, np.multiply, np.negative, np.positive):
            out = getattr(ufunc, method)(*args, **kwargs) % P
        elif ufunc is np.equal or ufunc is np.not_equal:
            return getattr(ufunc, method)(*args, **kwargs)
        else:
            raise TypeError(f"{ufunc.__name__} is not a field operation")
        return np.asarray(out, dtype=np.int64).view(GF)


def _lift(x: Any) -> Any:
    """Python numbers and plain arrays into GF(P) representatives."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            raise TypeError("float arrays have no exact image in GF(P); convert with element()")
        return x.astype(np.int64) % P
    return element(x)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b mod P, summing at most MAX_DOT products in int64 before each reduction."""
    out = None
    for lo in range(0, max(a.shape[-1], 1), MAX_DOT):
        rows = b[lo:lo + MAX_DOT] if b.ndim == 1 else b[..., lo:lo + MAX_DOT, :]
        part = np.matmul(a[..., lo:lo + MAX_DOT], rows) % P
        out = part if out is None else (out + part) % P
    return out


def random_gf(rng: np.random.Generator, shape: tuple[int, ...]) -> GF:
    return GF(rng.integers(0, P, size=shape, dtype=np.int64))
