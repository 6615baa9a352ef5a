"""Channel widths as monomials in the model width D: width = coef * D**power.

Every channel operator maps a monomial to a monomial (dense to a constant, expand squares, contract
takes a square root), so widths of a spec can be checked for composition before D is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import isqrt

from padre_compiler.errors import ShapeError


@dataclass(frozen=True, order=True)
class Width:
    coef: Fraction
    power: int

    @staticmethod
    def dim() -> Width:
        return Width(Fraction(1), 1)

    @staticmethod
    def const(n: int) -> Width:
        return Width(Fraction(n), 0)

    def square_over(self, heads: int) -> Width:
        """(h * e) -> h * e**2 for e = width / h: the outer-product expansion per head."""
        return Width(self.coef * self.coef / heads, 2 * self.power)

    def root_times(self, heads: int) -> Width:
        """Inverse of `square_over`: h * e**2 -> h * e."""
        if self.power % 2:
            raise ShapeError(f"width {self} is not heads * e**2 for any width e")
        hc = self.coef * heads
        num, den = isqrt(hc.numerator), isqrt(hc.denominator)
        if num * num != hc.numerator or den * den != hc.denominator:
            raise ShapeError(f"width {self} is not {heads} * e**2 for a monomial e")
        return Width(Fraction(num, den), self.power // 2)

    def at(self, dim: int) -> int:
        """The concrete width for model width `dim`; it must be a positive integer."""
        value = self.coef * dim**self.power
        if value.denominator != 1 or value <= 0:
            raise ShapeError(f"width {self} is not a positive integer at dim={dim}")
        return int(value)

    def render(self, dim: str = "dim") -> str:
        """Python integer expression for this width, e.g. `dim * dim // 4`."""
        if self.power == 0:
            return str(int(self.coef)) if self.coef.denominator == 1 else f"{self.coef}"
        factors = " * ".join([dim] * self.power)
        if self.coef.numerator != 1:
            factors = f"{self.coef.numerator} * {factors}"
        return factors if self.coef.denominator == 1 else f"{factors} // {self.coef.denominator}"

    def __str__(self) -> str:
        return self.render("D").replace(" ", "")
