"""The Python DSL: any polynomial graph of linear maps, sums and Hadamard products.

    from padre_compiler import dsl
    x = dsl.tokens()
    y1 = dsl.dwconv1d(dsl.dense(x, "b1"), "a1", kernel=3, causal=True)
    y2 = dsl.dense(x, "b2")
    spec = dsl.spec("gated", layout="sequence", output=dsl.dense(y1 * y2, "proj"))

`a * b` is the Hadamard product, `a + b` the sum. Ops that own parameters take a name, which
becomes the prefix of their parameters in generated code (`b1_weight`, `a1_bias`, ...).
Attributes are validated against the op registry as they are written.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from padre_compiler.errors import ShapeError, SpecError
from padre_compiler.ir import ops as _ops
from padre_compiler.ir.names import name_problem
from padre_compiler.ir.registry import OPS
from padre_compiler.ir.width import Width
from padre_compiler.spec.surrogates import BASES, FUNCTIONS, surrogate_coeffs


def require_identifier(name: str, field: str, *, spec: bool = False,
                       source: str | None = None) -> None:
    """SpecError unless `name` can name a spec (`spec`) or an op in generated code
    (padre_compiler.ir.names)."""
    problem = name_problem(name, spec=spec)
    if problem:
        raise SpecError(field, f"the {'spec' if spec else 'op'} name {name!r} {problem}",
                        "choose another of ASCII letters, digits and underscores, starting with "
                        "a letter (e.g. mixer_2d)", source=source)


LAYOUTS = ("sequence", "grid2d")  # 1-D tokens; an H x W grid, row-major


def _operand(other: Any, op: str) -> Expr:
    if isinstance(other, Expr):
        return other
    hint = ("to scale by a constant, use dsl.diagonal(x, name), a learned per-channel scale"
            if op == "*" else "to add a constant, use dsl.bias(x, name), a learned per-channel "
            "bias")
    raise TypeError(f"'{op}' joins two spec expressions (the Hadamard product or the sum), got "
                    f"{type(other).__name__} {other!r}; {hint}")


class Expr:
    """A node of the spec's expression DAG. Immutable once built."""

    __slots__ = ("attrs", "field", "init", "inputs", "label", "layout", "name", "op", "width")

    def __init__(self, op: str, inputs: tuple[Expr, ...], attrs: dict[str, Any],
                 name: str | None = None, label: str = "", field: str = "",
                 init: Mapping[str, tuple[float, float]] | None = None) -> None:
        opdef = OPS[op]
        for x in inputs:  # dsl.dense("x", "w"), dsl.add(a, 3): not an AttributeError below
            if not isinstance(x, Expr):
                raise SpecError(field or op, f"op '{op}' takes spec expressions, got "
                                f"{type(x).__name__} {x!r}",
                                "build its input from dsl.tokens() with the dsl ops")
        if name is not None:
            require_identifier(name, f"{field}.name" if field else op)
        self.op, self.inputs, self.name, self.label = op, inputs, name, label
        self.field = field  # where a spec file declares it ("" for the DSL)
        self.attrs = opdef.resolve_attrs(attrs, field or op)
        layouts = {x.layout for x in inputs} - {"any"}
        if opdef.layout != "any":
            layouts.add(opdef.layout)
        if len(layouts) > 1 and opdef.layout == "any":
            raise SpecError(field or op, f"op '{op}' mixes layouts: its inputs are "
                            f"{' and '.join(sorted(layouts))}",
                            "build every operand from one dsl.tokens(layout)")
        if len(layouts) > 1:
            raise SpecError(field or op, f"op '{op}' needs a {opdef.layout} layout, but its "
                            f"input is a {' and '.join(sorted(layouts - {opdef.layout}))}",
                            "use a token operator defined for this layout (dwconv2d on "
                            "grid2d specs; dwconv1d, long_conv, prefix_sum on sequences)")
        self.layout = layouts.pop() if layouts else "any"
        _check_fixed_split(op, self.attrs, [x.width for x in inputs], field or op)
        try:
            self.width = _ops.shape_rules[op](self.attrs, [x.width for x in inputs])
        except ShapeError as err:
            raise SpecError(field or op, f"channel sizes do not compose: {err}",
                            "give a product's or a sum's operands one width, and check dense "
                            "'out' and expand/contract 'heads' and 'times'") from None
        roles = _ops.param_rules[op](self.attrs, [x.width for x in inputs], self.width)
        if roles and not name:
            raise SpecError(field or op, f"op '{op}' has parameters and needs a name",
                            "pass name=... (it prefixes the parameters in generated code)")
        self.init = _interval_inits(init or {}, roles, field or op)

    def __mul__(self, other: Expr) -> Expr:
        return Expr("hadamard", (self, _operand(other, "*")), {})

    def __add__(self, other: Expr) -> Expr:
        return Expr("add", (self, _operand(other, "+")), {})

    def __rmul__(self, other: Any) -> Expr:
        return self * other

    def __radd__(self, other: Any) -> Expr:
        if type(other) is int and other == 0:  # sum(terms) starts from 0
            return self
        return self + other

    def __sub__(self, other: Any) -> Expr:
        raise TypeError("a spec has no '-': write a + dsl.diagonal(b, name) (a learned per-"
                        "channel scale, which may be negative)")

    __rsub__ = __sub__

    def __matmul__(self, other: Any) -> Expr:
        raise TypeError("a spec has no '@': channel maps are ops (dsl.dense(x, name)), token "
                        "maps too (dwconv1d, dwconv2d, long_conv, prefix_sum, global_sum)")

    def __repr__(self) -> str:
        return f"Expr({self.op}, {self.name or self.label or ''}, width={self.width})"


def _check_fixed_split(op: str, attrs: dict[str, Any], widths: list[Width], field: str) -> None:
    """SpecError where a per-head op's input has a width that does not depend on D (a dense
    with an integer `out`) and does not split into its heads (times its copies, for a
    contract): no model width makes it valid, so the fix is the width, not --dim."""
    heads = attrs.get("heads")
    if not heads or not widths or widths[0].power != 0:
        return
    times = attrs.get("times") if op == "contract" else None
    split = heads * (times or 1)
    if widths[0].coef % split:
        what = f"heads={heads}" + (f" times times={times}" if times else "")
        raise SpecError(field, f"op '{op}' splits its input into {what}, but the input has "
                        f"{widths[0]} channels at every model width",
                        f"give the map before it an out that is a multiple of {split}")


FLOAT32_MAX = float(np.finfo(np.float32).max)  # hi - lo must hold in a parameter's default dtype


def _real(v: Any) -> bool:
    """A real number (numpy's too), not a bool, within float32's range."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and \
        abs(float(v)) <= FLOAT32_MAX


def _interval_inits(init: Mapping[str, Any], roles: Mapping[str, Any], field: str
                    ) -> dict[str, tuple[float, float]]:
    """init = {role: (lo, hi)}: those parameters drawn uniformly on [lo, hi] at
    initialisation (in place of their op's default; lo = hi, a constant), checked."""
    if not isinstance(init, Mapping):
        raise SpecError(f"{field}.init", f"{init!r} is not a mapping",
                        "give {parameter: (lo, hi)}, e.g. {'bias': (-7.0, -2.0)}")
    out = {}
    for role, bounds in init.items():
        if role not in roles:
            raise SpecError(f"{field}.init", f"no parameter '{role}' to initialise",
                            f"its parameters: {', '.join(roles) or 'none'}")
        pair = isinstance(bounds, (tuple, list, np.ndarray)) and len(bounds) == 2
        if not (pair and all(_real(b) for b in bounds)
                and 0 <= bounds[1] - bounds[0] <= FLOAT32_MAX):
            raise SpecError(f"{field}.init.{role}", f"{bounds!r} is not an interval",
                            f"give (lo, hi): two numbers, lo <= hi, hi - lo <= "
                            f"{FLOAT32_MAX:.3g}")
        out[role] = (float(bounds[0]), float(bounds[1]))
    return out


def tokens(layout: str = "any") -> Expr:
    """X, the [B, N, D] input."""
    if layout not in ("any", *LAYOUTS):
        raise SpecError("layout", f"unknown layout '{layout}'",
                        f"use one of: any, {', '.join(LAYOUTS)}")
    x = Expr("input", (), {}, label="X")
    if layout != "any":
        x.layout = layout
    return x


def apply(op: str, x: Expr, name: str | None = None, *, label: str = "", field: str = "",
          init: Mapping[str, tuple[float, float]] | None = None, **attrs: Any) -> Expr:
    """Apply a registered op to x (a unary linear map, a normaliser or a surrogate).
    init = {role: (lo, hi)} draws those of its parameters uniformly on [lo, hi] at
    initialisation (e.g. dense(x, "w", bias=True, init={"bias": (-7, -2)}))."""
    if op not in APPLICABLE:
        what = "unknown op" if op not in OPS else "not an op apply() takes"
        hint = " (a polynomial: dsl.surrogate)" if op == "poly" else ""
        raise SpecError(field, f"{what} '{op}'{hint}",
                        f"apply takes: {', '.join(APPLICABLE)}; join expressions with * and +")
    return Expr(op, (x,), attrs, name=name, label=label, field=field, init=init)


# the unary maps a spec is written with: token and channel maps, bias, normalisation (the
# structural and fused ops are the compiler's; poly is built by `surrogate`)
APPLICABLE = tuple(sorted(name for name, d in OPS.items()
                          if d.kind in ("token", "channel") or name in ("bias", "normalize")))


def _unary(op: str) -> Callable[..., Expr]:
    def build(x: Expr, name: str | None = None, *,
              init: Mapping[str, tuple[float, float]] | None = None, **attrs: Any) -> Expr:
        return apply(op, x, name, init=init, **attrs)

    build.__name__ = op
    build.__doc__ = OPS[op].doc
    return build


identity = _unary("identity")
diagonal = _unary("diagonal")
dense = _unary("dense")
expand = _unary("expand")
contract = _unary("contract")
dwconv1d = _unary("dwconv1d")
dwconv2d = _unary("dwconv2d")
global_sum = _unary("global_sum")
prefix_sum = _unary("prefix_sum")
long_conv = _unary("long_conv")
bias = _unary("bias")
normalize = _unary("normalize")


def surrogate(x: Expr, fn: str, order: int, lo: float, hi: float, basis: str = "chebyshev",
              *, field: str = "") -> Expr:
    """p(x) ~ fn(x) on [lo, hi], a degree-`order` polynomial (stored in Chebyshev form)."""
    if fn not in FUNCTIONS:
        raise SpecError(f"{field}.fn" if field else "fn", f"unknown function '{fn}'",
                        f"surrogates exist for: {', '.join(FUNCTIONS)}")
    if basis not in BASES:
        raise SpecError(f"{field}.basis" if field else "basis", f"unknown basis '{basis}'",
                        f"use one of: {', '.join(BASES)}")
    if not (isinstance(order, int) and not isinstance(order, bool) and 1 <= order <= 64):
        raise SpecError(f"{field}.order" if field else "order",
                        f"order must be an integer in 1..64, got {order!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
               for v in (lo, hi)):  # "a" or None: not a TypeError in the comparison below
        raise SpecError(f"{field}.range" if field else "range",
                        f"expected two numbers lo, hi, got {lo!r}, {hi!r}",
                        "give range = [lo, hi] with lo < hi inside the function's domain")
    dom_lo, dom_hi = FUNCTIONS[fn][2]
    if not (dom_lo <= lo < hi <= dom_hi):
        raise SpecError(f"{field}.range" if field else "range",
                        f"range [{lo}, {hi}] is empty or outside the domain of {fn}",
                        "give range = [lo, hi] with lo < hi inside the function's domain")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            coeffs = surrogate_coeffs(fn, order, float(lo), float(hi), basis)
    except (OverflowError, ValueError):  # a function value beyond float64 (Fraction(inf))
        coeffs = (math.inf,)
    if not all(math.isfinite(c) for c in coeffs):
        raise SpecError(f"{field}.range" if field else "range",
                        f"{fn} overflows float64 on [{lo}, {hi}]",
                        "narrow the range to the values the input reaches")
    return Expr("poly", (x,), {"coeffs": coeffs, "lo": float(lo), "hi": float(hi),
                               "surrogate": f"{fn} ({basis}, order {order})"}, field=field)


def add(*terms: Expr) -> Expr:
    if not terms:
        raise SpecError("add", "a sum of no terms", "pass one expression or more")
    return terms[0] if len(terms) == 1 else Expr("add", tuple(terms), {})


def output_width_is_dim(out: Expr, field: str) -> None:
    if out.width != Width.dim():
        raise SpecError(field, f"the output has width {out.width}, not D",
                        "end with a projection back to D: a dense with out = \"dim\" (a dense "
                        "with no 'out' keeps its input's width), or a contract")


def spec(name: str, *, layout: str, output: Expr, description: str = "",
         fixed_dim: int | None = None) -> Any:
    """A Spec from an expression (the DSL's entry point). `fixed_dim`: the only model width
    the graph is valid at, when it hard-codes a head width (e.g. expand times=e for e^3
    tensor-power features); compile refuses any other."""
    from padre_compiler.spec.model import Spec

    return Spec.from_expr(name, layout=layout, output=output, description=description,
                          fixed_dim=fixed_dim)
