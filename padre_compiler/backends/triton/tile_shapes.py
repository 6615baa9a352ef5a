"""Register tiles of a Triton kernel at a launch, by interpreting its source with the
launch's constexprs (`register_tiles`); legality.py checks them against a GPU's registers.

The kernel's body, and the body of each @triton.jit helper
at each call, is interpreted with the launch's constexprs (a constexpr the launch leaves out
takes its default), giving every expression its shape: `tl.arange` extents, `[:, None]` and
`[None, :]` broadcasts, elementwise operators and `tl.where`/`tl.minimum`/... (broadcast
shapes), `tl.load` and the atomics (the pointer tile's shape, broadcast with the mask's),
`tl.zeros`/`tl.full` (their shape argument), `tl.dot`, reductions, `tl.reshape`,
`tl.permute`/`tl.trans`, `tl.broadcast_to`, `tl.gather`, casts. A branch on a constexpr the
launch fixes is followed as the compiler follows it; a branch on anything else is taken both
ways, a name it binds to different tiles keeping the larger; a loop body is read once (a
loop-carried tile keeps its shape).
- Counted: every data tile, i.e. one that is loaded, made by `tl.zeros`/`tl.full`, produced
  by `tl.dot` or an atomic, computed from such a tile, or cast to a floating type; and every
  value `tl.store` writes. Not counted: integer and boolean tiles computed from aranges and
  scalars alone (offsets, pointers, masks, gather indices): the compiler forms addresses and
  predicates per vectorised access from the aranges instead of holding one register per
  element, and a tile that addresses or indexes data has a loaded, stored or gathered tile of
  its shape, which is counted.
- Registers: one 32-bit register per element, two for a 64-bit type, whatever the element
  width below that: a 16-bit tile (a load before its `.to(tl.float32)`) counts as its fp32
  copy does. Conservative: a 16-bit layout may pack two values in a register, and a
  `tl.dot` operand loaded in a pipelined loop goes to shared memory, not registers. A
  load's element type is the pointer's, which the source does not say: the launch's
  `elem_bytes`.
- Live at once: each tile is checked on its own, elements x registers / (32 num_warps)
  against `GpuLimits.max_tile_regs` (the largest tile of each source line is reported);
  tiles live together are not summed (no liveness analysis: a kernel's total is what
  aot.py's compile measures).
- Undetermined shapes are problems, not skipped: an unmodelled `tl` function, a call of a
  function that is not a @triton.jit function of the source, a name the source does not
  bind, a subscript other than `None`/`:` broadcasting, shapes that do not broadcast, or a
  statement the interpreter does not read, wherever a tile would come of it.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class RegisterTile:
    """The largest counted tile one source line of a @triton.jit function makes at a launch."""
    function: str
    line: int  # in the source
    expr: str  # the expression that makes it
    shape: tuple[int, ...]
    regs: int  # 32-bit registers per element

    def per_thread(self, num_warps: int) -> float:
        return math.prod(self.shape) * self.regs / (32 * max(num_warps, 1))


def _jitted(fn: ast.FunctionDef) -> bool:
    return any(ast.unparse(d).startswith("triton.jit") for d in fn.decorator_list)


@functools.cache  # a generated module is parsed once however many launches are checked
def jit_functions(source: str) -> dict[str, ast.FunctionDef]:
    return {fn.name: fn for fn in ast.walk(ast.parse(source))
            if isinstance(fn, ast.FunctionDef) and _jitted(fn)}


@dataclass(frozen=True)
class _Tile:
    shape: tuple[int, ...]
    data: bool  # counted (module docstring); False: an index, offset, pointer or mask tile
    regs: int = 1  # 32-bit registers per element

    @property
    def size(self) -> int:
        return math.prod(self.shape) * self.regs


@dataclass(frozen=True)
class _Scalar:
    value: Any = None  # a constexpr's value; None where only the running program knows it


@dataclass(frozen=True)
class _DType:
    floating: bool | None  # None: a pointer's element type
    regs: int


@dataclass(frozen=True)
class _Unknown:
    reason: str
    reported: bool = False  # a problem names it already (its first tile-making use)


@dataclass(frozen=True)
class _Cast:
    value: Any  # `value.to`, the tensor or scalar it is called on


@dataclass(frozen=True)
class _Ref:
    name: str  # `tl`, or a @triton.jit function of the source


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
           ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Is: operator.is_, ast.IsNot: operator.is_not}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
          ast.Invert: operator.invert}
# tl functions whose result broadcasts their tensor arguments (elementwise)
_ELEMENTWISE = {"where", "minimum", "maximum", "clamp", "fma", "abs", "exp", "exp2", "log",
                "log2", "sqrt", "sqrt_rn", "rsqrt", "sigmoid", "sin", "cos", "erf", "floor",
                "ceil", "fdiv", "div_rn", "umulhi", "cdiv", "softmax"}
# reductions, each with the position of its keep_dims argument in Triton's signature
_REDUCTIONS = {"sum": 2, "xor_sum": 2, "max": 4, "min": 4, "argmax": 3, "argmin": 3,
               "reduce": 3}
_SCANS = {"cumsum", "cumprod", "associative_scan", "sort", "flip"}  # same shape
_ATOMICS = {"atomic_add", "atomic_max", "atomic_min", "atomic_and", "atomic_or", "atomic_xor",
            "atomic_xchg", "atomic_cas"}
_HINTS = {"multiple_of", "max_contiguous", "max_constancy"}  # their first argument
_NOTHING = {"static_assert", "static_print", "device_print", "device_assert", "debug_barrier"}
_SCALARS = {"program_id", "num_programs", "range", "static_range"}
_BUILTINS = {"float", "int", "bool", "min", "max", "abs", "len", "range"}


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    out: list[int] = []
    for dims in zip(*(((1,) * (max(map(len, shapes)) - len(s)) + s) for s in shapes),
                    strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _join(a: Any, b: Any) -> Any:
    """A name's value after a branch the launch does not decide: the larger tile."""
    if a == b:
        return a
    if isinstance(a, _Tile) and isinstance(b, _Tile):
        big = a if a.size >= b.size else b
        return replace(big, data=a.data or b.data)
    if isinstance(a, _Scalar) and isinstance(b, _Scalar):
        return _Scalar()
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(_join(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, _Unknown):
        return a
    if isinstance(b, _Unknown):
        return b
    return _Unknown(f"{a} or {b}, by a branch the launch does not decide")


def _defaults(fn: ast.FunctionDef) -> dict[str, _Scalar]:
    """The parameters of `fn` with a default, each its value (a literal, else unknown)."""
    params = fn.args.args[len(fn.args.args) - len(fn.args.defaults):]
    out = {}
    for p, default in zip(params, fn.args.defaults, strict=True):
        try:
            out[p.arg] = _Scalar(ast.literal_eval(default))
        except ValueError:
            out[p.arg] = _Scalar()
    return out


@dataclass
class _Frame:
    function: str
    env: dict[str, Any]
    returns: list[Any] = field(default_factory=list)
    returned: bool = False


class _Interpreter:
    def __init__(self, source: str, elem_regs: int) -> None:
        self.functions = jit_functions(source)
        self.elem_regs = elem_regs
        self.tiles: dict[tuple[str, int], RegisterTile] = {}
        self.unsized: dict[tuple[str, int], str] = {}
        self.stack: list[_Frame] = []

    # -- results ----------------------------------------------------------------------------
    def count(self, node: ast.AST, value: Any) -> Any:
        if isinstance(value, _Tile) and value.data:
            key = (self.stack[-1].function, node.lineno)
            old = self.tiles.get(key)
            if old is None or math.prod(old.shape) * old.regs < value.size:
                expr = ast.unparse(node)
                self.tiles[key] = RegisterTile(key[0], node.lineno,
                                               expr if len(expr) <= 80 else expr[:77] + "...",
                                               value.shape, value.regs)
        return value

    def unknown(self, node: ast.AST, reason: str | _Unknown) -> _Unknown:
        """The value of a tile-making expression whose shape is undetermined: reported once."""
        if isinstance(reason, _Unknown):
            if reason.reported:
                return reason
            reason = reason.reason
        key = (self.stack[-1].function, node.lineno)
        self.unsized.setdefault(key, f"cannot size `{ast.unparse(node)[:80]}` "
                                     f"({key[0]}, line {key[1]}): {reason}")
        return _Unknown(reason, reported=True)

    # -- functions --------------------------------------------------------------------------
    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        fn = self.functions[name]
        if any(f.function == name for f in self.stack):
            return _Unknown(f"{name} calls itself")
        env: dict[str, Any] = {}
        defaults = _defaults(fn)
        for i, p in enumerate(fn.args.args):
            if i < len(args):
                env[p.arg] = args[i]
            elif p.arg in kwargs:
                env[p.arg] = kwargs[p.arg]
            elif p.arg in defaults:
                env[p.arg] = defaults[p.arg]
            else:
                env[p.arg] = _Unknown(f"{name}'s argument {p.arg} is not given")
        frame = _Frame(name, env)
        self.stack.append(frame)
        try:
            self.block(fn.body)
        finally:
            self.stack.pop()
        if not frame.returns:
            return None
        return functools.reduce(_join, frame.returns)

    def launch(self, kernel: str, consts: dict[str, Any]) -> None:
        fn = self.functions[kernel]
        defaults = _defaults(fn)
        args = []
        for p in fn.args.args:
            constexpr = p.annotation is not None and ast.unparse(p.annotation) == "tl.constexpr"
            if constexpr and p.arg in consts:
                args.append(_Scalar(consts[p.arg]))
            elif constexpr and p.arg in defaults:
                args.append(defaults[p.arg])
            else:  # a pointer or integer argument, or a constexpr the launch does not fix
                args.append(_Scalar())
        self.call(kernel, args, {})

    # -- statements -------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, Any]:
        return self.stack[-1].env

    def block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if self.stack[-1].returned:
                return
            self.statement(stmt)

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Expr):
            self.expr(stmt.value)
        elif isinstance(stmt, ast.Assign):
            value = self.expr(stmt.value)
            for target in stmt.targets:
                self.assign(target, value, stmt)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.assign(stmt.target, self.expr(stmt.value), stmt)
        elif isinstance(stmt, ast.AugAssign):
            value = self.count(stmt, self.binop(stmt, stmt.op, self.expr(stmt.target),
                                                self.expr(stmt.value)))
            self.assign(stmt.target, value, stmt)
        elif isinstance(stmt, ast.If):
            self.branch(self.expr(stmt.test), stmt.body, stmt.orelse)
        elif isinstance(stmt, ast.For):
            self.expr(stmt.iter)
            self.assign(stmt.target, _Scalar(), stmt)
            self.block(stmt.body)  # one pass: a loop-carried tile keeps its shape
            self.block(stmt.orelse)
        elif isinstance(stmt, ast.While):
            self.expr(stmt.test)
            self.block(stmt.body)
        elif isinstance(stmt, ast.Return):
            frame = self.stack[-1]
            frame.returns.append(None if stmt.value is None else self.expr(stmt.value))
            frame.returned = True
        elif not isinstance(stmt, ast.Pass | ast.Break | ast.Continue | ast.Assert):
            self.unknown(stmt, f"a {type(stmt).__name__} statement is not read")

    def branch(self, test: Any, body: list[ast.stmt], orelse: list[ast.stmt]) -> None:
        if isinstance(test, _Scalar) and test.value is not None:
            self.block(body if test.value else orelse)
            return
        frame, start = self.stack[-1], dict(self.env)
        ends = []
        for side in (body, orelse):
            frame.env, frame.returned = dict(start), False
            self.block(side)
            ends.append((frame.env, frame.returned))
        live = [env for env, returned in ends if not returned]
        frame.returned = not live
        frame.env = functools.reduce(
            lambda a, b: {k: _join(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k))
                          for k in a | b}, live or [start])

    def assign(self, target: ast.expr, value: Any, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, ast.Tuple | ast.List):
            parts = (value if isinstance(value, tuple) and len(value) == len(target.elts)
                     else [value if isinstance(value, _Unknown)
                           else _Unknown(f"{value} unpacked into {len(target.elts)} names")]
                     * len(target.elts))
            for t, v in zip(target.elts, parts, strict=True):
                self.assign(t, v, stmt)
        else:
            self.unknown(stmt, f"assignment to {ast.unparse(target)} is not read")

    # -- expressions ------------------------------------------------------------------------
    def expr(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return _Scalar(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id == "tl" or node.id in self.functions:
                return _Ref(node.id)
            return _Unknown(f"the name {node.id} is not bound in the source")
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self.expr(e) for e in node.elts)
        if isinstance(node, ast.BinOp):
            return self.count(node, self.binop(node, node.op, self.expr(node.left),
                                                   self.expr(node.right)))
        if isinstance(node, ast.UnaryOp):
            value = self.expr(node.operand)
            if isinstance(value, _Scalar) and value.value is not None:
                return _Scalar(_UNARY[type(node.op)](value.value))
            return self.count(node, value if isinstance(value, _Tile | _Unknown) else _Scalar())
        if isinstance(node, ast.BoolOp):
            values = [self.expr(v) for v in node.values]
            if all(isinstance(v, _Scalar) and v.value is not None for v in values):
                pick = any if isinstance(node.op, ast.Or) else all
                return _Scalar(pick(v.value for v in values))
            return _Scalar()
        if isinstance(node, ast.Compare):
            left, result = self.expr(node.left), None
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.expr(right_node)
                step = self.binop(node, op, left, right, _COMPARE[type(op)])
                result = step if result is None else self.binop(node, ast.BitAnd(), result, step)
                left = right
            return self.count(node, result)
        if isinstance(node, ast.IfExp):
            test = self.expr(node.test)
            if isinstance(test, _Scalar) and test.value is not None:
                return self.expr(node.body if test.value else node.orelse)
            return _join(self.expr(node.body), self.expr(node.orelse))
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Call):
            return self.call_expr(node)
        return _Unknown(f"a {type(node).__name__} expression is not read")

    def binop(self, node: ast.AST, op: ast.AST, a: Any, b: Any, fn=None) -> Any:
        fn = fn or _BINOPS.get(type(op))
        for v in (a, b):
            if isinstance(v, _Unknown):
                return v
            if v is None or isinstance(v, _Cast):
                return _Unknown(f"an operator on {v}")
        if isinstance(a, _Scalar) and isinstance(b, _Scalar):
            if a.value is None or b.value is None or fn is None:
                return _Scalar()
            try:
                return _Scalar(fn(a.value, b.value))
            except (ArithmeticError, TypeError, ValueError):
                return _Scalar()
        if not all(isinstance(v, _Tile | _Scalar) for v in (a, b)):
            return _Scalar()  # a comparison of dtypes
        tiles = [v for v in (a, b) if isinstance(v, _Tile)]
        shape = _broadcast(*(t.shape for t in tiles))
        if shape is None:
            return self.unknown(node, " and ".join(str(list(t.shape)) for t in tiles)
                                + " do not broadcast")
        data = [t for t in tiles if t.data]
        # the wider operand's registers (int32 data + an int64 offset is int64: two)
        regs = 1 if type(op) in _COMPARE else max(t.regs for t in tiles)
        return _Tile(shape, bool(data), regs)

    def subscript(self, node: ast.Subscript) -> Any:
        value = self.expr(node.value)
        if isinstance(value, _Unknown):
            return value
        if isinstance(value, tuple):
            index = self.expr(node.slice)
            if isinstance(index, _Scalar) and isinstance(index.value, int):
                return value[index.value]
            return _Unknown(f"{ast.unparse(node)}: an index the launch does not fix")
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        shape, dims = [], list(value.shape) if isinstance(value, _Tile) else []
        for item in items:
            if isinstance(item, ast.Constant) and item.value is None:
                shape.append(1)
            elif (isinstance(item, ast.Slice) and item.lower is None and item.upper is None
                  and item.step is None and dims):
                shape.append(dims.pop(0))
            else:
                return self.unknown(node, "a subscript other than None and : broadcasting")
        if dims:
            return self.unknown(node, f"{ast.unparse(node.slice)} does not index every "
                                      f"dimension of {list(value.shape)}")
        if isinstance(value, _Tile):
            return _Tile(tuple(shape), value.data, value.regs)
        return _Tile(tuple(shape), False)  # a scalar broadcast to ones

    def attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id == "tl":
            name = node.attr
            if name.startswith(("float", "bfloat", "int", "uint")):
                return _DType(not name.startswith(("int", "uint")),
                              2 if name.endswith("64") else 1)
            return _Ref(f"tl.{name}")
        value = self.expr(node.value)
        if isinstance(value, _Unknown):
            return value
        if node.attr == "dtype":
            if isinstance(value, _Tile):
                return _DType(value.data or None, value.regs)
            return _DType(None, self.elem_regs)  # a pointer's (or a scalar's) type
        if node.attr == "element_ty" and isinstance(value, _DType):
            return value
        if node.attr == "shape" and isinstance(value, _Tile):
            return tuple(_Scalar(d) for d in value.shape)
        if node.attr == "to" and isinstance(value, _Tile | _Scalar):
            return _Cast(value)
        return _Unknown(f"the attribute {ast.unparse(node)} is not read")

    def sizes(self, node: ast.AST, values: Any) -> tuple[int, ...] | _Unknown:
        """A shape argument: its values as integers the launch fixes."""
        values = values if isinstance(values, tuple) else (values,)
        if all(isinstance(v, tuple) for v in values) and len(values) == 1:
            values = values[0]
        dims = []
        for v in values:
            if isinstance(v, _Tile) and v.shape == ():
                v = _Scalar()
            if not isinstance(v, _Scalar) or not isinstance(v.value, int):
                return self.unknown(node, v if isinstance(v, _Unknown) else
                                    f"a shape {ast.unparse(node)} the launch does not fix")
            dims.append(int(v.value))
        return tuple(dims)

    def call_expr(self, node: ast.Call) -> Any:
        func = self.expr(node.func)
        if isinstance(func, _Unknown):
            if isinstance(node.func, ast.Name) and node.func.id in _BUILTINS:
                for a in node.args:
                    self.expr(a)
                return _Scalar()
            return self.unknown(node, func)
        args = [self.expr(a) for a in node.args]
        kwargs = {k.arg: self.expr(k.value) for k in node.keywords if k.arg}
        if isinstance(func, _Cast):  # x.to(dtype): a float type makes a data tile
            value, dtype = func.value, (args or [kwargs.get("dtype")])[0]
            if isinstance(value, _Scalar):
                return _Scalar()
            if not isinstance(dtype, _DType):
                return self.unknown(node, f"a cast to {dtype}")
            return self.count(node, _Tile(value.shape, value.data or dtype.floating is not False,
                                          dtype.regs))
        if not isinstance(func, _Ref):
            return self.unknown(node, f"{ast.unparse(node.func)} is not callable")
        if func.name in self.functions:
            return self.call(func.name, args, kwargs)
        if func.name.startswith("tl."):
            return self.count(node, self.tl_call(node, func.name[3:], args, kwargs))
        return self.unknown(node, f"{func.name} is not a @triton.jit function of the source")

    def tl_call(self, node: ast.Call, name: str, args: list[Any], kw: dict[str, Any]) -> Any:
        def arg(i: int, key: str, default: Any = None) -> Any:
            return args[i] if i < len(args) else kw.get(key, default)

        tensors = [v for v in (*args, *kw.values()) if not isinstance(v, _DType | _Ref)]
        missing = next((v for v in tensors if isinstance(v, _Unknown)), None)
        if name in _NOTHING:
            return None
        if missing is not None:
            return self.unknown(node, missing)
        if name in _SCALARS:
            return _Scalar()
        if name in _HINTS:
            return args[0]
        if name == "arange":
            start, end = arg(0, "start"), arg(1, "end")
            if isinstance(start, _Scalar) and isinstance(end, _Scalar) and \
                    isinstance(start.value, int) and isinstance(end.value, int):
                return _Tile((end.value - start.value,), False)
            return self.unknown(node, "an extent the launch does not fix")
        if name in ("zeros", "full"):
            dims = self.sizes(node, arg(0, "shape"))
            if isinstance(dims, _Unknown):
                return dims
            dtype = arg(1 if name == "zeros" else 2, "dtype")
            return _Tile(dims, True, dtype.regs if isinstance(dtype, _DType) else 1)
        if name in ("zeros_like", "full_like"):
            return _Tile(args[0].shape, True, args[0].regs) if isinstance(args[0], _Tile) \
                else _Scalar()
        if name in ("load", *_ATOMICS):
            shapes = [v.shape for v in (arg(0, "pointer"), arg(1, "mask" if name == "load"
                                                                 else "val"))
                      if isinstance(v, _Tile)]
            if name != "load":
                mask = kw.get("mask")
                shapes += [mask.shape] if isinstance(mask, _Tile) else []
            if not isinstance(arg(0, "pointer"), _Tile | _Scalar):
                return self.unknown(node, f"a pointer {arg(0, 'pointer')}")
            if not shapes:
                return _Scalar()  # a scalar load
            shape = _broadcast(*shapes)
            return self.unknown(node, "pointer and mask do not broadcast") if shape is None \
                else _Tile(shape, True, self.elem_regs)
        if name == "store":
            pointer, value = arg(0, "pointer"), arg(1, "value")
            shapes = [v.shape for v in (pointer, value) if isinstance(v, _Tile)]
            if isinstance(value, _Tile) and shapes:
                shape = _broadcast(*shapes)
                if shape is None:
                    return self.unknown(node, "pointer and value do not broadcast")
                self.count(node, _Tile(shape, True, value.regs))
            return None
        if name in _ELEMENTWISE:
            tiles = [v for v in tensors if isinstance(v, _Tile)]
            if not tiles:
                return _Scalar()
            shape = _broadcast(*(t.shape for t in tiles))
            if shape is None:
                return self.unknown(node, "arguments do not broadcast")
            return _Tile(shape, any(t.data for t in tiles), max(t.regs for t in tiles))
        x = args[0] if args else None
        if not isinstance(x, _Tile):
            return self.unknown(node, f"tl.{name} of {x}")
        if name in _REDUCTIONS:
            axis = getattr(arg(1, "axis"), "value", None)  # None: every axis
            keep = getattr(arg(_REDUCTIONS[name], "keep_dims"), "value", False)
            if axis is None:
                out = _Tile((1,) * len(x.shape), x.data, x.regs) if keep else _Scalar()
            else:
                axis %= len(x.shape)
                shape = tuple(1 if i == axis and keep else d for i, d in enumerate(x.shape)
                              if i != axis or keep)
                out = _Tile(shape, x.data, x.regs) if shape else _Scalar()
            indices = name in ("max", "min") and getattr(arg(2, "return_indices"), "value",
                                                         False)
            return (out, replace(out, regs=1) if isinstance(out, _Tile) else out) if indices \
                else out
        if name in _SCANS:
            return x
        if name == "dot":
            b = arg(1, "other")
            if not isinstance(b, _Tile) or len(b.shape) != len(x.shape) or \
                    x.shape[-1] != b.shape[-2] or x.shape[:-2] != b.shape[:-2]:
                return self.unknown(node, f"operands {list(x.shape)} and "
                                          f"{list(getattr(b, 'shape', ()))} do not multiply")
            return _Tile(x.shape[:-1] + b.shape[-1:], True, 1)
        if name in ("reshape", "view", "broadcast_to"):
            dims = self.sizes(node, tuple(args[1:]) or kw.get("shape"))
            if isinstance(dims, _Unknown):
                return dims
            if (math.prod(dims) != math.prod(x.shape) if name != "broadcast_to"
                    else _broadcast(x.shape, dims) != dims):
                return self.unknown(node, f"{list(x.shape)} does not become {list(dims)}")
            return _Tile(dims, x.data, x.regs)
        if name in ("permute", "trans"):  # tl.trans without an order: a 2-D transpose
            order = self.sizes(node, tuple(args[1:]) or kw.get("dims")) if \
                args[1:] or "dims" in kw else (1, 0)
            if isinstance(order, _Unknown):
                return order
            if sorted(order) != list(range(len(x.shape))):
                return self.unknown(node, f"{list(order)} does not permute {list(x.shape)}")
            return _Tile(tuple(x.shape[i] for i in order), x.data, x.regs)
        if name == "expand_dims":
            axis = getattr(arg(1, "axis"), "value", None)
            if not isinstance(axis, int):
                return self.unknown(node, "an axis the launch does not fix")
            axis %= len(x.shape) + 1
            return _Tile((*x.shape[:axis], 1, *x.shape[axis:]), x.data, x.regs)
        if name == "gather":
            index = arg(1, "index")
            if not isinstance(index, _Tile) or len(index.shape) != len(x.shape):
                return self.unknown(node, f"an index {index} for {list(x.shape)}")
            return _Tile(index.shape, x.data, x.regs)
        return self.unknown(node, f"tl.{name} is not modelled")


@functools.cache  # a configuration recurs across the shapes a launcher serves
def _register_tiles(source: str, kernel: str, consts: tuple, elem_regs: int
                    ) -> tuple[tuple[RegisterTile, ...], tuple[str, ...]]:
    run = _Interpreter(source, elem_regs)
    run.launch(kernel, dict(consts))
    return tuple(run.tiles.values()), tuple(run.unsized.values())


def register_tiles(source: str, kernel: str, consts: dict[str, Any], elem_bytes: int = 2
                   ) -> tuple[tuple[RegisterTile, ...], tuple[str, ...]]:
    """(tiles, unsized): the largest counted tile of each source line `kernel` runs at a
    launch with constexprs `consts` (its helpers' lines included), and why each tile the
    interpreter could not size has no shape (module docstring)."""
    if kernel not in jit_functions(source):
        raise ValueError(f"{kernel}: no @triton.jit function of that name in the source")
    params = {p.arg for p in jit_functions(source)[kernel].args.args}
    return _register_tiles(source, kernel, tuple(sorted((k, v) for k, v in consts.items()
                                                        if k in params)),
                           max(1, -(-elem_bytes // 4)))
