"""The `Spec`: a named, validated PADRe instance, built from TOML or from the DSL."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any

from padre_compiler.errors import SpecError
from padre_compiler.ir import ops
from padre_compiler.ir.graph import Graph, Node, freeze
from padre_compiler.ir.params import ParamDecl, ParamExpr
from padre_compiler.passes.linear import summed_copies
from padre_compiler.spec.dsl import LAYOUTS, Expr, output_width_is_dim, require_identifier


@dataclass(frozen=True)
class Branch:
    """One row of the canonical PADRe table, for documentation: Y_i = A_i(act(X B_i))."""

    token: str
    channel: tuple[str, ...]
    activation: str = ""


@dataclass(frozen=True)
class CanonicalForm:
    """The PADRe normal form a TOML spec declares (A_i, B_i; C_i, D_i; W, L, V; hooks)."""

    branches: tuple[Branch, ...]
    mixes: tuple[Branch, ...]
    terms: tuple[int, ...]
    weights: str
    bias: bool
    projection: tuple[str, ...]
    normalize: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    layout: str
    output: Expr
    description: str = ""
    source: str = "<python>"
    form: CanonicalForm | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    fixed_dim: int | None = None  # set when the graph hard-codes a head width (expand times=e)
    # a family spec's parameters set when it was loaded (load_spec's `params`), sorted by name
    params: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @staticmethod
    def from_expr(name: str, *, layout: str, output: Expr, description: str = "",
                  source: str = "<python>", form: CanonicalForm | None = None,
                  raw: dict[str, Any] | None = None, fixed_dim: int | None = None) -> Spec:
        require_identifier(name, "name", spec=True, source=source)
        if not isinstance(output, Expr):
            raise SpecError("output", f"expected a spec expression, got {type(output).__name__} "
                            f"{output!r}", "build the output from dsl.tokens() with the dsl ops",
                            source=source)
        if not isinstance(description, str):
            raise SpecError("description", f"expected a string, got {type(description).__name__} "
                            f"{description!r}", "describe the spec in words", source=source)
        if fixed_dim is not None:  # written into the generated constructor's check
            if not (isinstance(fixed_dim, numbers.Integral) and not isinstance(fixed_dim, bool)
                    and fixed_dim >= 1):
                raise SpecError("fixed_dim", f"expected a positive integer or None, got "
                                f"{type(fixed_dim).__name__} {fixed_dim!r}",
                                "give the one model width the graph is valid at (e.g. heads * "
                                "head width), or None for any width", source=source)
            fixed_dim = int(fixed_dim)
        if layout not in LAYOUTS:
            raise SpecError("layout", f"unknown layout '{layout}'",
                            f"use one of: {', '.join(LAYOUTS)}", source=source)
        if output.layout not in ("any", layout):
            raise SpecError("layout", f"the expression uses {output.layout} operators but the "
                            f"spec declares layout '{layout}'",
                            "declare the layout its token operators need", source=source)
        output_width_is_dim(output, "output")
        spec = Spec(name, layout, output, description, source, form, raw or {}, fixed_dim)
        spec.graph()  # validates parameter names
        return spec

    # derived views ----------------------------------------------------------------------------
    def graph(self) -> Graph:
        """The IR graph of this spec, before any pass."""
        g = Graph(self.layout)
        ids: dict[int, int] = {}
        owners: dict[str, Expr] = {}
        for expr in _postorder(self.output):
            params: tuple[tuple[str, ParamExpr], ...] = ()
            if expr.name:
                owner = owners.setdefault(expr.name, expr)
                if owner is not expr:
                    other = owner.field or f"another {owner.op}"
                    raise SpecError(expr.field or expr.name,
                                    f"two operators share this parameter name: '{expr.name}' "
                                    f"also names {other}",
                                    "give every parameterised operator its own name",
                                    source=self.source)
                decls = ops.param_rules[expr.op](expr.attrs, [x.width for x in expr.inputs],
                                                 expr.width)
                params = tuple((role, ParamExpr.leaf(f"{expr.name}_{role}")) for role in decls)
                g.decls.update({f"{expr.name}_{role}": d if role not in expr.init else
                                replace(d, init_range=expr.init[role])
                                for role, d in decls.items()})
            node = Node(expr.op, freeze(expr.attrs), expr.width, params,
                        expr.label or expr.name or "")
            ids[id(expr)] = g.add(node, [ids[id(x)] for x in expr.inputs])
        root = ids[id(self.output)]
        g.add(Node("output", (), self.output.width, (), "O"), [root])
        for name, copies in summed_copies(g).items():
            if g.decls[name].init == "ones" and g.decls[name].init_range is None:
                g.decls[name] = replace(g.decls[name], copies=copies)
        return g

    def param_decls(self) -> dict[str, ParamDecl]:
        """Every trainable tensor, in graph order: name -> declaration."""
        return self.graph().decls

    @property
    def degree(self) -> int:
        from padre_compiler.symbolic.degree import degrees

        g = self.graph()
        return degrees(g)[g.output_id].top

    @property
    def projection_maps(self) -> int | None:
        """How many unary maps follow the polynomial P in the graph (a TOML spec's projection
        chain); None where the spec does not mark P (the DSL)."""
        return len(self.form.projection) if self.form is not None else None


def _postorder(root: Expr) -> list[Expr]:
    """Expressions in dependency order (inputs first; ties in argument order), each once."""
    seen: set[int] = set()
    order: list[Expr] = []
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        expr, ready = stack.pop()
        if ready:
            order.append(expr)
            continue
        if id(expr) in seen:
            continue
        seen.add(id(expr))
        stack.append((expr, True))
        stack.extend((x, False) for x in reversed(expr.inputs))
    return order
