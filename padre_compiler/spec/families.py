"""Spec families: TOML specs whose structure follows from a few parameters (Hyena's order, the
orders of Mamba's surrogates, Castling-ViT's constant term and arccos order), where the
canonical recursion has no room for the shape:

    name = "mamba"
    family = "mamba_selective"

    [parameters]
    exp_order = 24

Each family declares its parameters once, in `FAMILIES` (type, default, allowed values or
bounds, meaning); the builder is the DSL function beside the model's derivation in
`padre_compiler/derive/`, so `padre prove` checks the very graph a family spec compiles to.
Values are checked like every other field and never evaluated.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from padre_compiler.errors import SpecError
from padre_compiler.ir.ops import MAX_SIZE
from padre_compiler.spec.model import Spec


@dataclass(frozen=True)
class Param:
    """One parameter: `kind` is int, float, str or list (a [lo, hi] pair of numbers)."""

    kind: type
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Family:
    doc: str
    params: dict[str, Param]
    build: Callable[[dict[str, Any]], Spec]


# builders import their derive module when called: derive/ imports the loader, which imports this
def _hyena(p: dict[str, Any]) -> Spec:
    from padre_compiler.derive.hyena import hyena_spec

    return hyena_spec(p["order"], p["filter_length"])


def _mamba_selective(p: dict[str, Any]) -> Spec:
    from padre_compiler.derive.mamba import selective_spec

    return selective_spec(p["exp_order"], p["softplus_order"], p["decay_min"],
                          tuple(p["softplus_range"]), p["states"])


def _castling_vit(p: dict[str, Any]) -> Spec:
    from padre_compiler.derive.castling_vit import castling_spec

    return castling_spec(p["heads"], p["variant"], p["eps"], p["taylor_terms"],
                         p["head_dim"] or None)


FAMILIES: dict[str, Family] = {
    "hyena": Family(
        "Hyena operator of any order N (degree N + 1): N gates, N - 1 long convolutions",
        {"order": Param(int, 2, "number of gates N", minimum=1, maximum=16),
         "filter_length": Param(int, 1024, "long-filter length (>= the longest sequence)",
                                minimum=1, maximum=MAX_SIZE)},
        _hyena),
    "mamba_selective": Family(
        "Mamba-1's selective scan, approximate: exp and softplus replaced by Chebyshev "
        "surrogates, the decay expanded binomially into exp_order + 1 causal prefix sums",
        {"exp_order": Param(int, 16, "order m of the exp surrogate on [decay_min, 0]",
                            minimum=1, maximum=48),
         "softplus_order": Param(int, 16, "order q of the softplus surrogate", minimum=1,
                                 maximum=48),
         "states": Param(int, 16, "state size N_s", minimum=1, maximum=MAX_SIZE),
         "decay_min": Param(float, -64.0, "lowest A (S_t - S_s) the input reaches (< 0)",
                            minimum=-1e6, maximum=-1e-9),
         "softplus_range": Param(list, [-9.0, 0.0],
                                 "[lo, hi] reached by softplus's argument X W_dt + b",
                                 minimum=-1e3, maximum=1e3)},
        _mamba_selective),
    "castling_vit": Family(
        "Castling-ViT linear-angular attention, inference form",
        {"heads": Param(int, 8, "attention heads (D must be a multiple)", minimum=1,
                        maximum=MAX_SIZE),
         "variant": Param(str, "released", "constant term of the angular kernel: 0.5 V "
                          "(released code) or 0.5 1 1^T V (exact kernel)",
                          choices=("released", "exact_kernel")),
         "eps": Param(float, 0.0, "added to each l2 norm: x / (|x|_2 + eps) (0 in the code)",
                      minimum=0.0),
         "taylor_terms": Param(int, 1, "odd Taylor terms of 1 - arccos(x)/pi after the "
                               "constant: 1 keeps x/pi (the released model), 2 adds x^3/(6 pi) "
                               "through e^3 tensor-power features", minimum=1, maximum=2),
         "head_dim": Param(int, 0, "head width e: the spec then compiles at D = heads * e only; "
                           "required by taylor_terms = 2; 0: any D", minimum=0,
                           maximum=MAX_SIZE)},
        _castling_vit),
}


def bound_text(v: float) -> str:
    """1,048,576 for an integral bound, else as %g (-1e-09)."""
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def family_params(family: str, values: Mapping[str, Any], field: str = "parameters"
                  ) -> dict[str, Any]:
    """`values` checked against the family's table; every parameter present (defaults).
    `field` names where they came from: the spec's [parameters] table, or "--param" (the
    command line's overrides)."""
    fam = _family(family)

    def where(key: str) -> str:
        return f"{field} {key}" if field.startswith("--") else f"{field}.{key}"

    for key in values:
        if key not in fam.params:
            near = difflib.get_close_matches(key, fam.params, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise SpecError(where(key), f"'{family}' has no parameter '{key}'",
                            f"{hint}its parameters: {', '.join(fam.params)}")
    return {k: _check(values.get(k, p.default), p, where(k)) for k, p in fam.params.items()}


def build_family(family: str, params: Mapping[str, Any]) -> Spec:
    """The spec of `family` at checked parameters (from `family_params`)."""
    return _family(family).build(dict(params))


def _family(family: str) -> Family:
    if family not in FAMILIES:
        near = difflib.get_close_matches(family, FAMILIES, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise SpecError("family", f"unknown family '{family}'",
                        f"{hint}families: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def _check(value: Any, p: Param, field: str) -> Any:
    if p.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, p.kind):
        raise SpecError(field, f"expected {_kind_name(p.kind)}, got {type(value).__name__} "
                        f"{value!r}", f"{p.doc}; default {p.default!r}")
    if p.kind is list:
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in value) or not value[0] < value[1]:
            raise SpecError(field, f"expected [lo, hi] with lo < hi, got {value!r}",
                            f"{p.doc}; default {p.default!r}")
        value = [float(v) for v in value]
    if p.choices and value not in p.choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in p.choices], n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise SpecError(field, f"unknown value {value!r}",
                        f"{hint}use one of: {', '.join(map(str, p.choices))}")
    for v in value if p.kind is list else [value]:  # a [lo, hi] pair: bounds on each
        if isinstance(v, (int, float)) and not math.isfinite(v):
            raise SpecError(field, f"non-finite number {v}", "use a finite number")
        if p.minimum is not None and v < p.minimum:
            raise SpecError(field, f"{v!r} is below the minimum {bound_text(p.minimum)}",
                            f"give {p.doc}, at least {bound_text(p.minimum)}")
        if p.maximum is not None and v > p.maximum:
            raise SpecError(field, f"{v!r} is above the maximum {bound_text(p.maximum)}",
                            f"give {p.doc}, at most {bound_text(p.maximum)}")
    return value


def _kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", list: "[lo, hi]"}[kind]
