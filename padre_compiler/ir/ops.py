"""Every IR op, declared once, with its rules registered right below the declaration.

Tables (one per concern, keyed by op name):
  shape_rules[op](attrs, in_widths) -> Width                       output channel width
  param_rules[op](attrs, in_widths, out_width) -> {role: ParamDecl} trainable tensors
  degree_rules[op](attrs, in_degrees, has_bias) -> Degrees         degrees in X of the terms
  flop_rules[op](attrs, in_widths, out_width, tokens) -> int        floating-point operations
  reference_rules[op](inputs, params, attrs, ctx) -> array          exact semantics, any field

Tensors are [B, N, C] (batch, tokens, channels); 2-D layouts flatten the grid row-major,
token t = h * W + w. Reference rules use only +, -, *, / and slicing on numpy arrays, so they
evaluate in float64 and over object arrays (sympy symbols, exact integers) alike. A backend's
lowering table lives in the backend.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from math import log2
from typing import Any

import numpy as np

from padre_compiler.errors import ShapeError
from padre_compiler.ir.params import ParamDecl
from padre_compiler.ir.registry import Attr, OpDef, RuleTable, declare
from padre_compiler.ir.width import Width

shape_rules = RuleTable("shape")
param_rules = RuleTable("parameter")
degree_rules = RuleTable("degree")
flop_rules = RuleTable("cost")
reference_rules = RuleTable("reference")

ELEMENT_BYTES = 4  # costs are reported for fp32 activations and weights


@dataclass(frozen=True)
class Degrees:
    """The set of degrees (in X) of the monomials of a tensor's entries; `normalized` marks
    a non-polynomial normaliser upstream (then the degrees are the numerator's)."""

    terms: frozenset[int]
    normalized: bool = False

    @property
    def top(self) -> int:
        return max(self.terms)

    @property
    def homogeneous(self) -> bool:
        return len(self.terms) == 1

    def __str__(self) -> str:
        """{0,1,2,3}, with runs of five or more as ranges: {1,3..403}."""
        runs: list[list[int]] = []
        for d in sorted(self.terms):
            if runs and d == runs[-1][-1] + 1:
                runs[-1].append(d)
            else:
                runs.append([d])
        degs = ",".join(f"{r[0]}..{r[-1]}" if len(r) >= 5 else ",".join(map(str, r))
                        for r in runs)
        return f"{{{degs}}}" + (" (normalized)" if self.normalized else "")


@dataclass(frozen=True)
class EvalContext:
    """What a reference rule may need beyond its inputs: the token grid and the scalar field's
    non-ring functions (absolute value and square root; absent over exact integers)."""

    grid: tuple[int, int] | None = None
    abs: Callable[[Any], Any] | None = np.abs
    sqrt: Callable[[Any], Any] | None = np.sqrt
    const: Callable[[float], Any] = float  # a float attribute as an element of the field
    dim: int | None = None  # the model width D (for widths proportional to D, e.g. expand)
    # certificates: normalisers as uninterpreted functions, x -> x * phi(column or row of x)
    opaque_norm: Callable[[Any, dict[str, Any]], Any] | None = None


# attribute checks ---------------------------------------------------------------------------
MAX_SIZE = 2**20  # kernel, filter length, widths, copies, heads: far beyond any model, and
# within what the arrays the certificates draw can hold (2**62 overflowed numpy)


def _positive(v: int) -> str | None:
    if v < 1:
        return f"must be a positive integer, got {v}"
    return None if v <= MAX_SIZE else f"must be at most {MAX_SIZE:,}, got {v:,}"


def _size_or_dim(v: int | str | None) -> str | None:
    """None (the op's default), "dim" (the model width D) or a positive size."""
    if v is None or v == "dim" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return None if not isinstance(v, int) else _positive(v)
    return f'must be a positive integer or "dim", got {v!r}'


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _one_of(*allowed: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in allowed else f"must be one of {', '.join(allowed)}; got '{v}'"

    return check


def _kernel2d(v: int | list | tuple) -> str | None:
    ks = [v, v] if isinstance(v, int) else list(v)
    if len(ks) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) for k in ks):
        return f"must be an odd integer or a pair [kh, kw] of odd integers, got {v!r}"
    if any(k < 1 or k % 2 == 0 for k in ks):
        return f"kernel sizes must be odd and positive (a centred window), got {v!r}"
    return next((_positive(k) for k in ks if _positive(k)), None)


def kernel2d(attrs: dict[str, Any]) -> tuple[int, int]:
    k = attrs["kernel"]
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


BIAS = Attr("bias", bool, False, doc="add a learned per-channel bias after the map")
HEADS = Attr("heads", int, 1, check=_positive, doc="independent blocks of channels")

# helpers shared by rules --------------------------------------------------------------------
def same_width(attrs: dict[str, Any], widths: list[Width]) -> Width:
    return widths[0]


def no_params(attrs: dict[str, Any], widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    return {}


def bias_param(out: Width) -> dict[str, ParamDecl]:
    return {"bias": ParamDecl((out,), "zeros")}


def linear_degrees(attrs: dict[str, Any], degs: list[Degrees], has_bias: bool) -> Degrees:
    terms = degs[0].terms | {0} if has_bias else degs[0].terms
    return Degrees(terms, degs[0].normalized)


def per_element(k: int) -> Callable[..., int]:
    """k flops per output element."""

    def rule(attrs: dict[str, Any], widths: list[Width | int], out: int, tokens: int) -> int:
        return k * tokens * out

    return rule


def _tap_sum(x: np.ndarray, w: np.ndarray, offsets: list[list[int]],
             axes: tuple[int, ...]) -> np.ndarray:
    """y = sum over taps t of w[:, t] * x shifted by (offsets[k][t_k] along axes[k]):
    y[..., i, ...] += w[:, t] x[..., i + offset, ...], zero outside x's range (any dtype).
    w: [C, len(offsets[0]), ...]. A tap whose window lies wholly outside x adds zero and is
    skipped."""
    reach = [[(t, d) for t, d in enumerate(o) if -x.shape[a] < d < x.shape[a]]
             for a, o in zip(axes, offsets, strict=True)]
    widths = [(0, 0)] * x.ndim
    for a, taps in zip(axes, reach, strict=True):
        ds = [d for _, d in taps] or [0]
        widths[a] = (max(0, -min(ds)), max(0, max(ds)))
    padded = np.pad(x, widths)
    y = np.zeros_like(x)
    for tap in itertools.product(*reach):
        window = [slice(None)] * x.ndim
        for a, (_, d) in zip(axes, tap, strict=True):
            window[a] = slice(widths[a][0] + d, widths[a][0] + d + x.shape[a])
        y = y + padded[tuple(window)] * w[(slice(None), *(t for t, _ in tap))]
    return y


def _add_bias(y: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    return y + params["bias"] if "bias" in params else y


# structural ---------------------------------------------------------------------------------
declare(OpDef("input", "structural", 0, doc="X, shape [B, N, D]"))
declare(OpDef("output", "structural", 1, doc="the module's result"))
shape_rules.register("output")(same_width)
param_rules.register("input", "output")(no_params)
flop_rules.register("input", "output")(per_element(0))


@shape_rules.register("input")
def _input_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    return Width.dim()


@reference_rules.register("input")
def _input_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return xs[0]  # the interpreter feeds X as the input node's only argument


@degree_rules.register("input")
def _input_degree(attrs: dict[str, Any], degs: list[Degrees], has_bias: bool) -> Degrees:
    return Degrees(frozenset({1}))


degree_rules.register("output")(linear_degrees)


@reference_rules.register("output")
def _output_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return xs[0]


declare(OpDef("split", "structural", 1, (
    Attr("parts", int, required=True, check=_positive),
    Attr("index", int, required=True),
), doc="the index-th of `parts` equal channel blocks"))


@shape_rules.register("split")
def _split_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    return Width(widths[0].coef / attrs["parts"], widths[0].power)


param_rules.register("split")(no_params)
degree_rules.register("split")(linear_degrees)
flop_rules.register("split")(per_element(0))


@reference_rules.register("split")
def _split_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    w = xs[0].shape[-1] // attrs["parts"]
    return xs[0][..., attrs["index"] * w:(attrs["index"] + 1) * w]


# channel maps -------------------------------------------------------------------------------
declare(OpDef("identity", "channel", 1, doc="x -> x"))
shape_rules.register("identity")(same_width)
param_rules.register("identity")(no_params)
degree_rules.register("identity")(linear_degrees)
flop_rules.register("identity")(per_element(0))


@reference_rules.register("identity")
def _identity_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return xs[0]


declare(OpDef("diagonal", "channel", 1, doc="x -> x * s  (per-channel scale, s: [C])"))
shape_rules.register("diagonal")(same_width)
degree_rules.register("diagonal")(linear_degrees)
flop_rules.register("diagonal")(per_element(1))


@param_rules.register("diagonal")
def _diagonal_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    return {"scale": ParamDecl((out,), "ones")}


@reference_rules.register("diagonal")
def _diagonal_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return xs[0] * params["scale"]


declare(OpDef("dense", "channel", 1, (
    Attr("out", (int, str, type(None)), None, check=_size_or_dim,
         fix='give out as a positive integer or "dim" (the model width D)',
         doc='output width: an integer, "dim" for D, or absent for the input width'),
    BIAS,
), doc="x -> x @ weight.T + bias  (weight: [out, in])"))
degree_rules.register("dense")(linear_degrees)


@shape_rules.register("dense")
def _dense_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    out = attrs["out"]
    return widths[0] if out is None else Width.dim() if out == "dim" else Width.const(out)


@param_rules.register("dense")
def _dense_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    weight = {"weight": ParamDecl((out, widths[0]), "uniform", widths[0])}
    return weight | (bias_param(out) if attrs["bias"] else {})


@flop_rules.register("dense")
def _dense_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    return 2 * tokens * widths[0] * out


@reference_rules.register("dense")
def _dense_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return _add_bias(xs[0] @ params["weight"].T, params)


def _copies(attrs: dict[str, Any], e: int, ctx: EvalContext) -> int:
    """How many copies `expand` makes of each head of width e: e (square), T, or D."""
    t = attrs["times"]
    if t == "dim":
        if ctx.dim is None:
            raise ShapeError("expand with times = \"dim\" needs the model width D")
        return ctx.dim
    return e if t is None else t


declare(OpDef("expand", "channel", 1, (
    Attr("mode", str, "replicate", check=_one_of("replicate", "tile"),
         doc="replicate: slot (g, c, n) holds channel c of head g; tile: it holds channel n"),
    HEADS,
    Attr("times", (int, str, type(None)), None, check=_size_or_dim,
         fix='give times as a positive integer or "dim" (the model width D)',
         doc="copies per head: absent for e (outer-product features, e -> e*e), an integer T "
             "or \"dim\" for D (rectangular: replicate lays slots out (g, c, j), tile "
             "(g, j, c), j < T)"),
), doc="outer-product features: per head of width e, e -> e*T channels (0/1 matrices E, F)"))
param_rules.register("expand")(no_params)
degree_rules.register("expand")(linear_degrees)
flop_rules.register("expand")(per_element(0))


@shape_rules.register("expand")
def _expand_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    t = attrs["times"]
    if t is None:
        return widths[0].square_over(attrs["heads"])
    return Width(widths[0].coef, widths[0].power + 1) if t == "dim" else \
        Width(widths[0].coef * t, widths[0].power)


@reference_rules.register("expand")
def _expand_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    x = xs[0]
    b, n, w = x.shape
    h = attrs["heads"]
    e = w // h
    t = _copies(attrs, e, ctx)
    x = x.reshape(b, n, h, e)
    if attrs["mode"] == "replicate":  # out[..., g, c, j] = x[..., g, c]
        out = np.repeat(x[..., :, None], t, axis=-1)
    else:  # out[..., g, j, m] = x[..., g, m]
        out = np.repeat(x[..., None, :], t, axis=-2)
    return out.reshape(b, n, h * e * t)


declare(OpDef("contract", "channel", 1, (
    Attr("keep", str, "tile", check=_one_of("tile", "replicate"),
         doc="tile: sum over the replicated index c, keep m; replicate: the reverse"),
    HEADS,
    Attr("times", (int, type(None)), None,
         check=lambda v: None if v is None else _positive(v),
         doc="absent: per head e*e -> e; an integer T: per head e*T -> e, summing the T "
             "copies an expand with the same T made (keep = its mode)"),
), doc="per head, e*T -> e channels: a sum over one index of the (c, j) slot grid"))
param_rules.register("contract")(no_params)
degree_rules.register("contract")(linear_degrees)


@shape_rules.register("contract")
def _contract_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    if attrs["times"] is None:
        return widths[0].root_times(attrs["heads"])
    return Width(widths[0].coef / attrs["times"], widths[0].power)


@flop_rules.register("contract")
def _contract_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    return tokens * widths[0]


@reference_rules.register("contract")
def _contract_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    x = xs[0]
    b, n, w = x.shape
    h, t = attrs["heads"], attrs["times"]
    if t is None:
        e = t = round((w // h) ** 0.5)
    else:
        e = w // (h * t)
    # keep = tile: slots (g, j, m), sum over j; keep = replicate: slots (g, c, j), sum over j
    x = x.reshape(b, n, h, t, e) if attrs["keep"] == "tile" else x.reshape(b, n, h, e, t)
    return x.sum(axis=3 if attrs["keep"] == "tile" else 4).reshape(b, n, h * e)


# token maps ---------------------------------------------------------------------------------
def _centred_kernel_is_odd(attrs: dict[str, Any]) -> tuple[str, str, str] | None:
    if attrs["causal"] or attrs["kernel"] % 2:
        return None
    return ("kernel", f"a centred kernel must be odd, got {attrs['kernel']}",
            "use an odd size such as 3 or 11, or set causal = true")


declare(OpDef("dwconv1d", "token", 1, (
    Attr("kernel", int, required=True, check=_positive,
         fix="use a positive kernel size, odd unless causal = true (e.g. 3, 11)"),
    Attr("causal", bool, False, doc="window [t-k+1, t] instead of centred [t-k//2, t+k//2]"),
    BIAS,
), layout="sequence", doc="depthwise 1-D convolution along tokens (weight: [C, k])",
    check=_centred_kernel_is_odd))
shape_rules.register("dwconv1d")(same_width)
degree_rules.register("dwconv1d")(linear_degrees)


@param_rules.register("dwconv1d")
def _dwconv1d_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    k = Width.const(attrs["kernel"])
    return {"weight": ParamDecl((out, k), "uniform", k)} | (
        bias_param(out) if attrs["bias"] else {})


@flop_rules.register("dwconv1d")
def _dwconv1d_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    return 2 * tokens * out * attrs["kernel"]


@reference_rules.register("dwconv1d")
def _dwconv1d_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    # y[t, c] = sum_j w[c, j] x[t + j - pad, c], pad = k - 1 (causal) or k // 2 (centred)
    x, w, k = xs[0], params["weight"], attrs["kernel"]
    pad = k - 1 if attrs["causal"] else k // 2
    y = _tap_sum(x, w, [[j - pad for j in range(k)]], axes=(1,))
    return _add_bias(y, params)


declare(OpDef("dwconv2d", "token", 1, (
    Attr("kernel", (int, list), required=True, check=_kernel2d,
         fix="use an odd size such as 3, 7 or 11, or a pair [kh, kw] of odd sizes"),
    BIAS,
), layout="grid2d", doc="depthwise 2-D convolution on the H x W token grid, centred, zero padded"))
shape_rules.register("dwconv2d")(same_width)
degree_rules.register("dwconv2d")(linear_degrees)


@param_rules.register("dwconv2d")
def _dwconv2d_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    kh, kw = kernel2d(attrs)
    fan = Width.const(kh * kw)
    decl = ParamDecl((out, Width.const(kh), Width.const(kw)), "uniform", fan)
    return {"weight": decl} | (bias_param(out) if attrs["bias"] else {})


@flop_rules.register("dwconv2d")
def _dwconv2d_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    kh, kw = kernel2d(attrs)
    return 2 * tokens * out * kh * kw


@reference_rules.register("dwconv2d")
def _dwconv2d_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    # y[h, w, c] = sum_{i,j} weight[c, i, j] x[h + i - kh//2, w + j - kw//2, c]
    if ctx.grid is None:
        raise ShapeError("dwconv2d needs a token grid (H, W)")
    x, wt = xs[0], params["weight"]
    b, n, c = x.shape
    gh, gw = ctx.grid
    kh, kw = kernel2d(attrs)
    x4 = x.reshape(b, gh, gw, c)
    y = _tap_sum(x4, wt, [[i - kh // 2 for i in range(kh)], [j - kw // 2 for j in range(kw)]],
                 axes=(1, 2))
    return _add_bias(y.reshape(b, n, c), params)


declare(OpDef("global_sum", "token", 1, doc="y[t] = sum_s x[s]  (the all-ones matrix 1 1^T)"))
shape_rules.register("global_sum")(same_width)
param_rules.register("global_sum")(no_params)
degree_rules.register("global_sum")(linear_degrees)
flop_rules.register("global_sum")(per_element(1))


@reference_rules.register("global_sum")
def _global_sum_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    x = xs[0]
    return np.repeat(x.sum(axis=1, keepdims=True), x.shape[1], axis=1)


declare(OpDef("prefix_sum", "token", 1, layout="sequence",
              doc="y[t] = sum_{s<=t} x[s]  (lower-triangular all-ones matrix)"))
shape_rules.register("prefix_sum")(same_width)
param_rules.register("prefix_sum")(no_params)
degree_rules.register("prefix_sum")(linear_degrees)
flop_rules.register("prefix_sum")(per_element(1))


@reference_rules.register("prefix_sum")
def _prefix_sum_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return np.cumsum(xs[0], axis=1)


declare(OpDef("long_conv", "token", 1, (
    Attr("length", int, required=True, check=_positive,
         fix="set length to the longest sequence the module will see"),
    Attr("skip", bool, False, doc="add a per-channel skip d[c] x[t] (Hyena's diag(b))"),
), layout="sequence",
    doc="explicit causal long convolution y[t] = sum_{s<=t} h[c, t-s] x[s] (filter h: [C, L])"))
shape_rules.register("long_conv")(same_width)
degree_rules.register("long_conv")(linear_degrees)


@param_rules.register("long_conv")
def _long_conv_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    length = Width.const(attrs["length"])
    decl = {"filter": ParamDecl((out, length), "uniform", length)}
    return decl | ({"skip": ParamDecl((out,), "ones")} if attrs["skip"] else {})


@flop_rules.register("long_conv")
def _long_conv_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    # FFT lowering: two real FFTs and one inverse of size m (~2.5 m log2 m flops each) plus
    # the spectral product; O(N log N) per channel, not linear. m is the torch backend's size,
    # the power of two >= 2N - 1; the Triton backend's, 2N, is at most m.
    m = 1 << (2 * max(tokens, 1) - 1).bit_length()
    return int(out * (3 * 2.5 * m * log2(m) + 6 * m))


@reference_rules.register("long_conv")
def _long_conv_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    x, h = xs[0], params["filter"]
    n = x.shape[1]
    if n > attrs["length"]:
        raise ShapeError(f"long_conv filter length {attrs['length']} < sequence length {n}")
    y = _tap_sum(x, h, [[-lag for lag in range(n)]], axes=(1,))
    return y + x * params["skip"] if "skip" in params else y


# elementwise --------------------------------------------------------------------------------
declare(OpDef("hadamard", "elementwise", 2, doc="x ⊙ y"))
param_rules.register("hadamard")(no_params)
flop_rules.register("hadamard")(per_element(1))


@shape_rules.register("hadamard")
def _hadamard_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    if widths[0] != widths[1]:
        raise ShapeError(f"Hadamard product of widths {widths[0]} and {widths[1]}")
    return widths[0]


@degree_rules.register("hadamard")
def _hadamard_degree(attrs: dict, degs: list[Degrees], has_bias: bool) -> Degrees:
    terms = frozenset(a + b for a in degs[0].terms for b in degs[1].terms)
    return Degrees(terms, degs[0].normalized or degs[1].normalized)


@reference_rules.register("hadamard")
def _hadamard_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return xs[0] * xs[1]


declare(OpDef("add", "elementwise", None, doc="x + y + ..."))
param_rules.register("add")(no_params)


@shape_rules.register("add")
def _add_shape(attrs: dict[str, Any], widths: list[Width]) -> Width:
    if len(set(widths)) != 1:
        raise ShapeError(f"sum of widths {', '.join(map(str, widths))}")
    return widths[0]


@degree_rules.register("add")
def _add_degree(attrs: dict, degs: list[Degrees], has_bias: bool) -> Degrees:
    return Degrees(frozenset().union(*(d.terms for d in degs)), any(d.normalized for d in degs))


@flop_rules.register("add")
def _add_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    return (len(widths) - 1) * tokens * out


@reference_rules.register("add")
def _add_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return sum(xs[1:], xs[0])


declare(OpDef("bias", "elementwise", 1, doc="x + b  (b: [C]; the degree-0 term L)"))
shape_rules.register("bias")(same_width)
degree_rules.register("bias")(linear_degrees)
flop_rules.register("bias")(per_element(1))


@param_rules.register("bias")
def _bias_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    return bias_param(out)


@reference_rules.register("bias")
def _bias_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return xs[0] + params["bias"]


declare(OpDef("poly", "elementwise", 1, (
    Attr("coeffs", tuple, required=True, doc="Chebyshev coefficients c_0..c_q"),
    Attr("lo", float, -1.0), Attr("hi", float, 1.0),
    Attr("surrogate", str, "", doc="the function it approximates, for documentation"),
), doc="p(x) = sum_k c_k T_k(u), u = (2x - lo - hi) / (hi - lo): a polynomial surrogate"))
shape_rules.register("poly")(same_width)
param_rules.register("poly")(no_params)


@degree_rules.register("poly")
def _poly_degree(attrs: dict, degs: list[Degrees], has_bias: bool) -> Degrees:
    # p(y) = sum_k a_k y^k: the degrees of y^k are k-fold sums of y's (cross terms included)
    terms, power = {0}, {0}
    for _ in range(len(attrs["coeffs"]) - 1):
        power = {a + b for a in power for b in degs[0].terms}
        terms |= power
    return Degrees(frozenset(terms), degs[0].normalized)


@flop_rules.register("poly")
def _poly_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    return (3 * len(attrs["coeffs"]) + 2) * tokens * out


@reference_rules.register("poly")
def _poly_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    # Clenshaw: b_k = c_k + 2u b_{k+1} - b_{k+2};  p = c_0 + u b_1 - b_2
    lo, hi = ctx.const(attrs["lo"]), ctx.const(attrs["hi"])
    c = [ctx.const(ck) for ck in attrs["coeffs"]]
    u = (2 * xs[0] - (lo + hi)) * (1 / (hi - lo))
    b1 = b2 = 0 * u
    for ck in reversed(c[1:]):
        b1, b2 = ck + 2 * u * b1 - b2, b1
    return c[0] + u * b1 - b2


declare(OpDef("normalize", "elementwise", 1, (
    Attr("kind", str, required=True, check=_one_of("l1_tokens", "l2_rows", "l1_rows"),
         fix="use l1_tokens (each channel / its l1 norm over tokens, SimA), l2_rows "
             "(each token / its l2 norm over the channels of its head, Castling-ViT) or "
             "l1_rows (each token / its l1 norm over the channels of its head)"),
    HEADS,
    Attr("eps", float, 1e-6, check=_non_negative, doc="added to the norm",
         fix="use eps >= 0 (0: plain division; a negative eps can make the norm 0)"),
), doc="a normalisation hook: non-polynomial; the certified object is the polynomial around it"))
shape_rules.register("normalize")(same_width)
param_rules.register("normalize")(no_params)
flop_rules.register("normalize")(per_element(3))


@degree_rules.register("normalize")
def _normalize_degree(attrs: dict, degs: list[Degrees], has_bias: bool) -> Degrees:
    return Degrees(degs[0].terms, True)


@reference_rules.register("normalize")
def _normalize_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    x, eps = xs[0], ctx.const(attrs["eps"])
    if ctx.opaque_norm is not None:
        return x * ctx.opaque_norm(x, attrs)
    if getattr(x, "dtype", None) == np.float16:  # in float32 at least, as the lowerings do
        return _normalize_ref([x.astype(np.float32)], params, attrs, ctx).astype(np.float16)
    if ctx.abs is None or ctx.sqrt is None:
        raise ShapeError("normalize is not defined over this field (it needs abs and sqrt)")
    if attrs["kind"] == "l1_tokens":
        return x / (ctx.abs(x).sum(axis=1, keepdims=True) + eps)
    b, n, w = x.shape
    h = attrs["heads"]
    xh = x.reshape(b, n, h, w // h)
    if attrs["kind"] == "l1_rows":
        norm = ctx.abs(xh).sum(axis=-1, keepdims=True) + eps
    else:
        norm = ctx.sqrt((xh * xh).sum(axis=-1, keepdims=True)) + eps
    return (xh / norm).reshape(b, n, w)


# fused ops (created by passes) ----------------------------------------------------------------
declare(OpDef("scaled_sum", "fused", None, doc=(
    "sum_k s_k ⊙ x_k with per-channel scales s_k: add(diagonal(x_1), ..., diagonal(x_n)) "
    "in one accumulation pass per term")))
shape_rules.register("scaled_sum")(_add_shape)
degree_rules.register("scaled_sum")(_add_degree)


@flop_rules.register("scaled_sum")
def _scaled_sum_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    return (2 * len(widths) - 1) * tokens * out  # s0 x0, then a multiply-add a further term


@param_rules.register("scaled_sum")
def _scaled_sum_params(attrs: dict, widths: list[Width], out: Width) -> dict[str, ParamDecl]:
    return {f"scale{k}": ParamDecl((out,), "ones") for k in range(len(widths))}


@reference_rules.register("scaled_sum")
def _scaled_sum_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    return sum((x * params[f"scale{k}"] for k, x in enumerate(xs[1:], 1)), xs[0] * params["scale0"])


declare(OpDef("linear_attention", "fused", 3, (
    HEADS,
    Attr("weighted", bool, False, doc="the [e, e] state is scaled slot-wise by a parameter"),
), doc=(
    "per head g: y = q_g (W_g ⊙ k_g^T v_g) (W = 1 unless weighted); equals "
    "contract(diag_W(global_sum(expand_r(k) ⊙ expand_t(v)) ⊙ expand_r(q))) without the "
    "N x e^2 intermediate")))
shape_rules.register("linear_attention")(same_width)


@param_rules.register("linear_attention")
def _linear_attention_params(attrs: dict, widths: list[Width], out: Width
                             ) -> dict[str, ParamDecl]:
    if not attrs["weighted"]:
        return {}
    return {"state": ParamDecl((out.square_over(attrs["heads"]),), "ones")}


@degree_rules.register("linear_attention")
def _linear_attention_degree(attrs: dict, degs: list[Degrees], has_bias: bool) -> Degrees:
    terms = frozenset(a + b + c for a in degs[0].terms for b in degs[1].terms
                      for c in degs[2].terms)
    return Degrees(terms, any(d.normalized for d in degs))


@flop_rules.register("linear_attention")
def _linear_attention_flops(attrs: dict, widths: list[int], out: int, tokens: int) -> int:
    head = out // attrs["heads"]
    return 4 * tokens * out * head  # k^T v, then q @ state: 2 N e^2 flops each, per head


@reference_rules.register("linear_attention")
def _linear_attention_ref(xs: list, params: dict, attrs: dict, ctx: EvalContext) -> np.ndarray:
    q, k, v = xs
    b, n, w = q.shape
    h = attrs["heads"]
    e = w // h
    q, k, v = (t.reshape(b, n, h, e) for t in (q, k, v))
    out = np.zeros_like(q)
    for bi in range(b):
        for g in range(h):
            state = k[bi, :, g, :].T @ v[bi, :, g, :]  # [e, e], slot (c, m)
            if attrs["weighted"]:
                state = state * params["state"].reshape(h, e, e)[g]
            out[bi, :, g, :] = q[bi, :, g, :] @ state
    return out.reshape(b, n, w)


def node_bytes(in_widths: list[int], out: int, tokens: int, n_params: int) -> int:
    """Bytes moved by one op run on its own: read inputs and parameters, write the output."""
    return ELEMENT_BYTES * (tokens * (sum(in_widths) + out) + n_params)
