"""TOML specs: the canonical PADRe recursion, validated field by field.

    Y_i     = A_i( act_i( X B_i ) )              [[branch]]  token = A_i, channel = B_i
    Z_1     = Y_1
    Z_{i+1} = C_i( Z_i D_i ) ⊙ Y_{i+1}           [[mix]]     token = C_i, channel = D_i
    P       = Σ_{i in terms} W_i ⊙ Z_i + L       [output]    terms, weights, bias
    O       = P V                                [output]    projection = V
    hooks   : normalize Y_i, Z_i or P            [[normalize]] at, kind, heads

A spec may instead name a family (`family = "hyena"` and a [parameters] table; see
padre_compiler/spec/families.py) whose builder lays out the graph from those parameters.

Field paths in errors count arrays of tables from 1 (branch[1] declares Y_1, mix[1] declares
C_1 and D_1, normalize[1] is the first hook) and inline lists from 0 (range[0]).

A spec file is data: every value is checked against the op registry's typed attributes and
nothing in it is evaluated, so a field holding code is just an unknown name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from padre_compiler.errors import ArgumentError, SpecError
from padre_compiler.ir.names import name_problem
from padre_compiler.ir.registry import OPS
from padre_compiler.ir.width import Width
from padre_compiler.paths import SPECS_DIR
from padre_compiler.spec import dsl
from padre_compiler.spec.dsl import Expr
from padre_compiler.spec.families import FAMILIES, build_family, family_params
from padre_compiler.spec.model import LAYOUTS, Branch, CanonicalForm, Spec

STRUCTURE_KEYS = ("layout", "degree", "branch", "mix", "output", "normalize")
TOP_KEYS = ("name", "description", *STRUCTURE_KEYS, "family", "parameters")
BRANCH_KEYS = ("token", "channel", "activation")
OUTPUT_KEYS = ("terms", "weights", "bias", "projection")
WEIGHTS = ("per_channel", "none")
OP_KINDS = {"token": ("token", "channel"), "channel": ("channel",)}  # identity is a channel op


def bundled_specs() -> list[Path]:
    return sorted(SPECS_DIR.glob("*.toml"))


def resolve_spec_path(path_or_name: str | Path) -> Path:
    """A .toml path or an existing path as given (a folder: load_spec says so), else the
    bundled spec of that name; a bare name stays the bundled spec's where a folder of that
    name exists (`-o padre3/module.py` makes one)."""
    if not isinstance(path_or_name, (str, os.PathLike)):  # compile(3): not a TypeError in Path
        raise ArgumentError(f"spec={path_or_name!r}: give a spec file's path, a bundled spec's "
                            "name (such as 'padre3') or a Spec (load_spec, dsl.spec)")
    path = Path(path_or_name)
    bundled = SPECS_DIR / f"{path_or_name}.toml"
    bare = str(path_or_name) == path.name and bundled.exists()  # a bundled spec's name
    if path.suffix == ".toml" or (path.exists() and not (bare and path.is_dir())):
        return path
    if bundled.exists():
        return bundled
    names = [p.stem for p in bundled_specs()]
    if not names:
        raise SpecError("", f"no spec file named '{path_or_name}', and this install has no "
                        f"bundled specs ({SPECS_DIR} is missing or empty)",
                        "give a spec file's path, or reinstall the package")
    near = difflib.get_close_matches(str(path_or_name), names, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    raise SpecError("", f"no spec file or bundled spec named '{path_or_name}'",
                    f"{hint}bundled specs: {', '.join(names)}")


def load_spec(path_or_name: str | Path, params: Mapping[str, Any] | None = None) -> Spec:
    """Load and validate a TOML spec given its path or the name of a bundled spec; `params`
    override a family spec's [parameters] (e.g. {"order": 3})."""
    path = resolve_spec_path(path_or_name)
    if params is not None and not isinstance(params, Mapping):
        raise ArgumentError(f"params={params!r}: give a mapping of a family spec's parameters "
                            "to values, e.g. {'order': 3}")
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", "file not found", "check the path", source=source) from None
    except IsADirectoryError:
        raise SpecError("", "is a folder, not a spec file", "give the path of a .toml file",
                        source=source) from None
    except UnicodeDecodeError as err:
        raise SpecError("", f"not UTF-8 text: {err}", "save the spec as UTF-8",
                        source=source) from None
    except OSError as err:
        raise SpecError("", f"cannot read the file: {err}", source=source) from None
    if text.startswith("\ufeff"):
        raise SpecError("", "the file starts with a UTF-8 byte-order mark (tomllib refuses it)",
                        "save the spec as UTF-8 without a BOM", source=source)
    try:
        return parse_spec(text, source=source, default_name=path.stem, params=params)
    except SpecError as err:
        raise err.located(source) from None


def parse_spec(text: str, source: str = "<string>", default_name: str = "spec",
               params: Mapping[str, Any] | None = None) -> Spec:
    if not text.strip():
        raise SpecError("", "the spec is empty",
                        "declare at least layout, degree and one [[branch]]; "
                        "start from specs/padre3.toml", source=source)
    try:
        data = tomllib.loads(text)
        _check_finite(data, "")
    except RecursionError:  # tomllib and _check_finite recurse per level of nesting
        raise SpecError("", "arrays or tables nested too deeply to read",
                        "a spec nests a few levels (an operator table, an init range): "
                        "remove the extra brackets or braces", source=source) from None
    except tomllib.TOMLDecodeError as err:
        fix = "fix the syntax at the line and column given"
        if Path(source).suffix == ".py":  # a DSL spec: the CLI reads TOML only
            fix += ("; a spec built in Python (padre_compiler.dsl) is compiled from Python: "
                    "padre_compiler.compile(spec, dim=...)")
        raise SpecError("", f"not valid TOML: {err}", fix, source=source) from None
    _unknown_keys(data, TOP_KEYS, "")
    if "family" in data:
        return _build_family(data, source, default_name, params or {})
    if "parameters" in data:
        raise SpecError("parameters", "a [parameters] table without a family",
                        f"add family = one of {', '.join(FAMILIES)}, or remove [parameters]",
                        source=source)
    if params:
        family = default_name if default_name in FAMILIES else "hyena"
        raise SpecError("parameters", f"this spec has no parameters to set ({', '.join(params)})",
                        "--param sets a family spec's parameters: write a spec file with "
                        f"family = \"{family}\" and a [parameters] table (families and their "
                        "parameters: `padre families`), or edit the fields of this spec's "
                        "recursion", source=source)
    return _build(data, source, default_name)


# validation helpers -------------------------------------------------------------------------
def _spec_name(data: dict[str, Any], default_name: str, source: str) -> str:
    """The `name` field, which must be an identifier, or else the file's stem made one
    ("2d-mixer.toml" -> "spec_2d_mixer")."""
    if "name" in data:
        name = _get(data, "name", str, "")
        dsl.require_identifier(name, "name", spec=True, source=source)
        return name
    name = re.sub(r"[^A-Za-z0-9_]+", "_", default_name).strip("_")
    return name if name_problem(name, spec=True) is None else f"spec_{name}".rstrip("_")


def _check_finite(value: Any, field: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(field, f"non-finite number {value}", "use a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{field}.{k}" if field else k)
    if isinstance(value, list):
        tables = bool(value) and all(isinstance(v, dict) for v in value)
        for i, v in enumerate(value, start=1 if tables else 0):
            _check_finite(v, f"{field}[{i}]")


def _unknown_keys(table: dict[str, Any], allowed: tuple[str, ...], field: str) -> None:
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            where = f"{field}.{key}" if field else key
            raise SpecError(where, "unknown field", f"{hint}known fields: {', '.join(allowed)}")


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], field: str,
         default: Any = ..., fix: str = "") -> Any:
    where = f"{field}.{key}" if field else key
    if key not in table:
        if default is ...:
            raise SpecError(where, "missing field", fix or f"add {key} = ...")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join("table" if k is dict else "list" if k is list else k.__name__
                            for k in kinds)
        raise SpecError(where, f"expected {names}, got {type(value).__name__} {value!r}",
                        fix or f"write {key} as a {names}")
    return value


def _op_table(value: Any, field: str) -> tuple[str, dict[str, Any], str | None]:
    """{op = "dense", name = "q", ...attrs} or the bare op name -> (op, attrs, name)."""
    if isinstance(value, str):
        value = {"op": value}
    if not isinstance(value, dict):
        raise SpecError(field, f"expected an operator table such as {{ op = \"dense\" }}, "
                        f"got {type(value).__name__} {value!r}",
                        "write the operator as { op = \"...\", ...attributes }")
    op = _get(value, "op", str, field, fix="name the operator: op = \"dense\"")
    name = _get(value, "name", str, field, default=None)
    attrs = {k: v for k, v in value.items() if k not in ("op", "name")}
    return op, attrs, name


def _check_op(op: str, role: str, field: str) -> None:
    allowed = [n for n, d in OPS.items() if d.kind in OP_KINDS[role]]
    if op not in allowed:
        near = difflib.get_close_matches(op, allowed, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise SpecError(f"{field}.op", f"unknown {role} operator '{op}'",
                        f"{hint}{role} operators: {', '.join(sorted(allowed))}")


def _apply_op(x: Expr, value: Any, role: str, field: str, default_name: str,
              layout: str) -> tuple[Expr, str]:
    op, attrs, name = _op_table(value, field)
    _check_op(op, role, field)
    opdef = OPS[op]
    if opdef.layout not in ("any", layout):
        raise SpecError(f"{field}.op", f"'{op}' is a {opdef.layout} operator but the spec's "
                        f"layout is {layout}",
                        "use dwconv1d for sequences and dwconv2d for grid2d specs")
    init = attrs.pop("init", None)  # {role = [lo, hi]}: validated by the op's parameters
    # attributes as a table, not keywords: any key is checked against the op's schema
    expr = Expr(op, (x,), attrs, name=default_name if name is None else name, field=field,
                init=init)
    return expr, op


def _channel_chain(x: Expr, value: Any, field: str, prefix: str,
                   layout: str) -> tuple[Expr, tuple[str, ...]]:
    chain = value if isinstance(value, list) else [value]
    if not chain:
        raise SpecError(field, "empty operator list", "give at least one operator (identity)")
    names = []
    for k, item in enumerate(chain):
        where = f"{field}[{k}]" if isinstance(value, list) else field
        default = prefix if len(chain) == 1 else f"{prefix}{k + 1}"
        x, op = _apply_op(x, item, "channel", where, default, layout)
        names.append(op)
    return x, tuple(names)


def _activation(x: Expr, value: Any, field: str) -> tuple[Expr, str]:
    if not isinstance(value, dict):
        raise SpecError(field, f"expected a table, got {value!r}",
                        'write activation = { fn = "gelu", order = 8, range = [-4, 4] }')
    _unknown_keys(value, ("fn", "order", "range", "basis"), field)
    fn = _get(value, "fn", str, field)
    order = _get(value, "order", int, field)
    rng = _get(value, "range", list, field, fix="give range = [lo, hi]")
    if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in rng):
        raise SpecError(f"{field}.range", f"expected [lo, hi], got {rng!r}",
                        "give two numbers: range = [-4, 4]")
    basis = _get(value, "basis", str, field, default="chebyshev")
    expr = dsl.surrogate(x, fn, order, float(rng[0]), float(rng[1]), basis, field=field)
    return expr, f"{fn}≈p_{order}"


def _normalize_hooks(data: dict[str, Any], degree: int) -> dict[str, dict[str, Any]]:
    hooks: dict[str, dict[str, Any]] = {}
    targets = [f"Y{i}" for i in range(1, degree + 1)] + \
        [f"Z{i}" for i in range(1, degree + 1)] + ["P"]
    for k, hook in enumerate(_get(data, "normalize", list, "", default=[]), start=1):
        field = f"normalize[{k}]"
        if not isinstance(hook, dict):
            raise SpecError(field, f"expected a table, got {hook!r}",
                            'write [[normalize]] with at = "Y1" and kind = "l1_tokens"')
        at = _get(hook, "at", str, field)
        if at not in targets:
            raise SpecError(f"{field}.at", f"unknown target '{at}'",
                            f"normalize one of: {', '.join(targets)}")
        if at in hooks:
            raise SpecError(f"{field}.at", f"{at} is normalized twice", "keep one hook per target")
        _unknown_keys(hook, ("at", "kind", "heads", "eps"), field)
        hooks[at] = {k: v for k, v in hook.items() if k != "at"}
    return hooks


def _hook(x: Expr, hooks: dict[str, dict[str, Any]], at: str) -> Expr:
    if at not in hooks:
        return x
    k = list(hooks).index(at) + 1
    return Expr("normalize", (x,), hooks[at], field=f"normalize[{k}]", label=at)


def _build_family(data: dict[str, Any], source: str, default_name: str,
                  overrides: Mapping[str, Any]) -> Spec:
    family = _get(data, "family", str, "", fix='name a family: family = "hyena"')
    for key in STRUCTURE_KEYS:
        if key in data:
            raise SpecError(key, f"a family spec takes its structure from family '{family}'",
                            f"remove '{key}', or remove 'family' and write the canonical "
                            "recursion")
    name = _spec_name(data, default_name, source)
    description = _get(data, "description", str, "", default="")
    values = family_params(family, _get(data, "parameters", dict, "", default={}))
    values |= {k: v for k, v in family_params(family, overrides, "--param").items()
               if k in overrides}
    spec = build_family(family, values)
    # the file's description speaks of its own parameters: overridden ones take the builder's
    described = description if description and not overrides else spec.description
    return dataclasses.replace(spec, name=name, description=described, source=source, raw=data,
                               params=tuple(sorted((k, values[k]) for k in overrides)))


# the canonical recursion ----------------------------------------------------------------------
def _build(data: dict[str, Any], source: str, default_name: str) -> Spec:
    name = _spec_name(data, default_name, source)
    description = _get(data, "description", str, "", default="")
    layout = _get(data, "layout", str, "", fix=f"add layout = one of {', '.join(LAYOUTS)}")
    if layout not in LAYOUTS:
        near = difflib.get_close_matches(layout, LAYOUTS, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise SpecError("layout", f"unknown layout '{layout}'",
                        f"{hint}use one of: {', '.join(LAYOUTS)}")
    degree = _get(data, "degree", int, "", fix="add degree = <number of branches>")
    if degree < 1:
        raise SpecError("degree", f"degree must be at least 1, got {degree}")
    branches = _get(data, "branch", list, "", fix="add one [[branch]] table per degree")
    if len(branches) != degree:
        raise SpecError("branch", f"degree = {degree} but {len(branches)} [[branch]] tables",
                        f"declare exactly {degree} [[branch]] tables, or set degree = "
                        f"{len(branches)}")
    mixes = _get(data, "mix", list, "", default=[{"token": "identity", "channel": "identity"}]
                 * (degree - 1))
    if len(mixes) != degree - 1:
        raise SpecError("mix", f"degree = {degree} needs {degree - 1} [[mix]] tables "
                        f"(one per Hadamard step), got {len(mixes)}",
                        "declare degree - 1 [[mix]] tables, or none for identity mixes")
    hooks = _normalize_hooks(data, degree)

    x = dsl.tokens(layout)
    ys, rows = [], []
    for i, br in enumerate(branches, start=1):
        field = f"branch[{i}]"
        if not isinstance(br, dict):
            raise SpecError(field, "expected a table", "write [[branch]] tables")
        _unknown_keys(br, BRANCH_KEYS, field)
        for key in ("token", "channel"):
            _get(br, key, (str, dict, list), field,
                 fix=f'add {key} = {{ op = "identity" }} or another {key} operator')
        h, channel = _channel_chain(x, br["channel"], f"{field}.channel", f"branch{i}_channel",
                                    layout)
        act = ""
        if "activation" in br:
            h, act = _activation(h, br["activation"], f"{field}.activation")
        y, token = _apply_op(h, br["token"], "token", f"{field}.token", f"branch{i}_token",
                             layout)
        y.label = y.label or f"Y{i}"
        ys.append(_hook(y, hooks, f"Y{i}"))
        rows.append(Branch(token, channel, act))

    zs, mix_rows = [_hook(ys[0], hooks, "Z1")], []
    implicit = "mix" not in data  # identity mixes: the product is Z_i and branch i + 1's
    for i, mix in enumerate(mixes, start=1):
        field = f"branch[{i + 1}] (its product with Z{i})" if implicit else f"mix[{i}]"
        if not isinstance(mix, dict):
            raise SpecError(field, "expected a table", "write [[mix]] tables")
        _unknown_keys(mix, ("token", "channel"), field)
        h, channel = _channel_chain(zs[-1], mix.get("channel", "identity"), f"{field}.channel",
                                    f"mix{i}_channel", layout)
        c, token = _apply_op(h, mix.get("token", "identity"), "token", f"{field}.token",
                             f"mix{i}_token", layout)
        z = dsl.Expr("hadamard", (c, ys[i]), {}, label=f"Z{i + 1}", field=field)
        zs.append(_hook(z, hooks, f"Z{i + 1}"))
        mix_rows.append(Branch(token, channel))

    out = _get(data, "output", dict, "", default={})
    _unknown_keys(out, OUTPUT_KEYS, "output")
    terms = _get(out, "terms", list, "output", default=list(range(1, degree + 1)))
    if not terms or any(not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= degree
                        for t in terms) or len(set(terms)) != len(terms):
        raise SpecError("output.terms", f"expected distinct degrees in 1..{degree}, got {terms!r}",
                        f"list the Z_i that enter P, e.g. terms = [{degree}]")
    weights = _get(out, "weights", str, "output", default="per_channel")
    if weights not in WEIGHTS:
        raise SpecError("output.weights", f"unknown weighting '{weights}'",
                        f"use one of: {', '.join(WEIGHTS)}")
    summands = []
    for t in sorted(terms):
        z = zs[t - 1]
        if weights == "per_channel":
            z = dsl.apply("diagonal", z, f"output_w{t}", field="output.weights",
                          label=f"W{t}⊙Z{t}")
        summands.append(z)
    p = dsl.add(*summands)
    with_bias = _get(out, "bias", bool, "output", default=False)
    if with_bias:
        p = dsl.apply("bias", p, "output_bias", field="output.bias")
    p = _hook(p, hooks, "P")
    if p.label == "":
        p.label = "P"
    projection: tuple[str, ...] = ()
    if "projection" in out:
        p, projection = _channel_chain(p, out["projection"], "output.projection", "proj", layout)
    if p.width != Width.dim():
        raise SpecError("output.projection", f"the output has width {p.width}, not D",
                        "project back to D: a contract after an expand, or a dense map")
    form = CanonicalForm(tuple(rows), tuple(mix_rows), tuple(sorted(terms)), weights, with_bias,
                         projection, tuple((k, v["kind"]) for k, v in hooks.items()))
    return Spec.from_expr(name, layout=layout, output=p, description=description, source=source,
                          form=form, raw=data)
