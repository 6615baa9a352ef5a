"""One declaration per op, one table per concern.

An op is declared once with `declare(...)` (its attributes and their types); each concern
(shape, parameters, degree, cost, reference evaluation, a backend's lowering) is a `RuleTable`
keyed by op name, and rules are registered right below the op's declaration in `ops.py`.
Looking up a rule an op lacks raises `MissingRuleError` naming the op and the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from padre_compiler.errors import MissingRuleError, SpecError

Check = Callable[[Any], str | None]  # returns a problem description, or None when valid


@dataclass(frozen=True)
class Attr:
    """A typed attribute of an op, with a default and a validity check."""

    name: str
    kind: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    check: Check | None = None
    fix: str = ""
    doc: str = ""

    def validate(self, value: Any, field: str) -> Any:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int))
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise SpecError(field, f"expected {names}, got {type(value).__name__} {value!r}",
                            self.fix or f"write {self.name} as a {names}")
        if self.check is not None and (problem := self.check(value)) is not None:
            raise SpecError(field, problem, self.fix)
        return value


@dataclass(frozen=True)
class OpDef:
    """An IR op. `kind` is one of: token, channel, elementwise, structural, fused."""

    name: str
    kind: str
    arity: int | None  # None: variadic
    attrs: tuple[Attr, ...] = ()
    layout: str = "any"  # "sequence", "grid2d" or "any": token layouts the op is defined on
    doc: str = ""
    # a check across attributes: (attribute, problem, fix) when invalid
    check: Callable[[dict[str, Any]], tuple[str, str, str] | None] | None = None
    attr_index: dict[str, Attr] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr_index", {a.name: a for a in self.attrs})

    def resolve_attrs(self, given: dict[str, Any], field: str) -> dict[str, Any]:
        """Validate `given` against the schema; fill defaults. Errors name `field.<attr>`."""
        unknown = sorted(set(given) - set(self.attr_index))
        if unknown:
            known = ", ".join(self.attr_index) or "none"
            raise SpecError(f"{field}.{unknown[0]}",
                            f"unknown attribute for op '{self.name}'",
                            f"attributes of '{self.name}' are: {known}")
        out: dict[str, Any] = {}
        for attr in self.attrs:
            if attr.name in given:
                out[attr.name] = attr.validate(given[attr.name], f"{field}.{attr.name}")
            elif attr.required:
                raise SpecError(f"{field}.{attr.name}", f"op '{self.name}' needs '{attr.name}'",
                                attr.fix or f"add {attr.name} = ...")
            else:
                out[attr.name] = attr.default
        if self.check is not None and (problem := self.check(out)) is not None:
            name, text, fix = problem
            raise SpecError(f"{field}.{name}", text, fix)
        return out


OPS: dict[str, OpDef] = {}


def declare(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op '{op.name}' declared twice")
    OPS[op.name] = op
    return op


class RuleTable:
    """A table of rules keyed by op name; `table[op]` fails loudly when a rule is missing."""

    def __init__(self, concern: str) -> None:
        self.concern = concern
        self._rules: dict[str, Callable[..., Any]] = {}

    def register(self, *ops: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            for op in ops:
                if op in self._rules:
                    raise ValueError(f"op '{op}' has two rules in the {self.concern} table")
                self._rules[op] = fn
            return fn

        return deco

    def __getitem__(self, op: str) -> Callable[..., Any]:
        try:
            return self._rules[op]
        except KeyError:
            raise MissingRuleError(op, self.concern) from None

    def __contains__(self, op: str) -> bool:
        return op in self._rules

    def snapshot(self) -> tuple[tuple[str, Callable[..., Any]], ...]:
        """The rules as they stand (op, function): equal while no rule is replaced."""
        return tuple(self._rules.items())

    def missing(self) -> list[str]:
        return sorted(set(OPS) - set(self._rules))
