"""Hyena of order N as a PADRe instance of degree N + 1 (padre-math.md §3.1): exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from padre_compiler import dsl
from padre_compiler.compiler import generate
from padre_compiler.derive import common
from padre_compiler.derive.common import Derivation, fmt
from padre_compiler.spec.loader import load_spec
from padre_compiler.spec.model import Spec

MISTAKES = ("gate_order",)  # gates x_0, x_1, ... in forward order instead of reversed
LENGTH = 1024  # l_max: the spec's filter length
NUMERIC_ORDERS = (2, 3, 4, 5)  # symbolic at 2 and 3; the builder loops one step an order


# 1. the naive twin: HyenaOperator.forward of HazyResearch/safari standalone_hyena.py -----------
def causal_conv(v: np.ndarray, k: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """fftconv(v, k, D) as a causal linear convolution: y[t] = sum_{s<=t} k[t-s] v[s] + D v[t].
    v: [B, L, D], k: [D, L]. (The FFT of size 2L with K/n and norm='forward' computes exactly
    this sum; instances.md §1.)"""
    n = v.shape[1]
    y = v * skip
    for t in range(n):
        for s in range(t + 1):
            y[:, t] = y[:, t] + k[:, t - s] * v[:, s]
    return y


def hyena_operator(u: np.ndarray, p: dict[str, np.ndarray], order: int, F: Any) -> np.ndarray:
    """u [B, L, D] -> [B, L, D]. p: in_proj.{weight,bias}, short_filter.{weight,bias},
    filter [N-1, D, L] (the implicit filter's output, truncated to L), bias [N-1, D] (the skip
    term the code calls `bias`), out_proj.{weight,bias}."""
    b, n, d = u.shape
    z = u @ p["in_proj.weight"].T + p["in_proj.bias"]  # [B, L, (N+1)D]
    w = p["short_filter.weight"]  # Conv1d((N+1)D, (N+1)D, 3, padding=2, groups=(N+1)D)
    zp = F.zeros((b, n + 2, z.shape[-1]), z)
    zp[:, 2:] = z
    uc = F.zeros(z.shape, z)
    for j in range(3):  # output[..., :L] of the padded conv: the causal window [t-2, t]
        uc = uc + zp[:, j:j + n] * w[:, 0, j]
    uc = uc + p["short_filter.bias"]
    xs = [uc[..., i * d:(i + 1) * d] for i in range(order)]
    v = uc[..., order * d:]  # v is the last slice
    for o in range(order - 1):
        v = v * xs[order - 1 - o]  # reverse order: x_{N-1} first
        v = causal_conv(v, p["filter"][o][:, :n], p["bias"][o])
    return (v * xs[0]) @ p["out_proj.weight"].T + p["out_proj.bias"]


def shapes(order: int, d: int, n: int) -> dict[str, tuple[int, ...]]:
    return {"in_proj.weight": ((order + 1) * d, d), "in_proj.bias": ((order + 1) * d,),
            "short_filter.weight": ((order + 1) * d, 1, 3),
            "short_filter.bias": ((order + 1) * d,),
            "filter": (order - 1, d, n), "bias": (order - 1, d),
            "out_proj.weight": (d, d), "out_proj.bias": (d,)}


# 2. the spec (any order: the builder of family "hyena"; specs/hyena.toml is order 2) ---------
def hyena_spec(order: int = 2, length: int = LENGTH) -> Spec:
    x = dsl.tokens("sequence")

    def branch(name: str, label: str) -> dsl.Expr:
        y = dsl.dwconv1d(dsl.dense(x, f"{name}_proj", bias=True), f"{name}_short", kernel=3,
                         causal=True, bias=True)
        y.label = label
        return y

    z = branch("v", "Y1")
    gates = [order - 1 - o for o in range(order - 1)] + [0]
    for i, j in enumerate(gates):
        if i > 0:
            z = dsl.long_conv(z, f"filter{i - 1}", length=length, skip=True)
        z = z * branch(f"x{j}", f"Y{i + 2}")
        z.label = f"Z{i + 2}"
    return dsl.spec("hyena" if order == 2 else f"hyena{order}", layout="sequence",
                    output=dsl.dense(z, "out_proj", bias=True),
                    description=f"Hyena operator, order {order}")


def mapping(p: dict, F: Any, order: int, d: int, length: int,
            mistake: str | None = None) -> dict:
    out: dict[str, Any] = {}
    w, bias = p["in_proj.weight"], p["in_proj.bias"]
    sw, sb = p["short_filter.weight"], p["short_filter.bias"]
    for name, i in [("v", order)] + [(f"x{j}", j) for j in range(order)]:
        if mistake == "gate_order" and name != "v":
            i = order - 1 - i  # pairs the gates in forward order
        sl = slice(i * d, (i + 1) * d)
        out |= {f"{name}_proj_weight": w[sl], f"{name}_proj_bias": bias[sl],
                f"{name}_short_weight": sw[sl, 0, :], f"{name}_short_bias": sb[sl]}
    n = p["filter"].shape[-1]
    for o in range(order - 1):
        filt = F.zeros((d, length), p["filter"])
        filt[:, :n] = p["filter"][o]
        out |= {f"filter{o}_filter": filt, f"filter{o}_skip": p["bias"][o]}
    return out | {"out_proj_weight": p["out_proj.weight"], "out_proj_bias": p["out_proj.bias"]}


def random_original(order: int, d: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """Weights at the scale of the originals; the filter decays like the exponential
    modulation exp(-t |δ|) of HyenaFilter."""
    rng = np.random.default_rng(seed)
    p = {k: rng.standard_normal(s) for k, s in shapes(order, d, n).items()}
    p["in_proj.weight"] /= np.sqrt(d)
    p["out_proj.weight"] /= np.sqrt(d)
    p["short_filter.weight"] /= np.sqrt(3)
    decay = np.exp(-np.linspace(0, 1, n)[None, None, :] * np.linspace(0.5, 15, d)[None, :, None])
    p["filter"] = p["filter"] * decay / np.sqrt(n)
    return p


def _body(source: str) -> str:
    return source.split('"""', 2)[2]  # the module without its docstring header


def prove(write: bool = False, path: Path | None = None, mistake: str | None = None) -> Derivation:
    if mistake not in (None, *MISTAKES):
        raise ValueError(f"unknown mistake '{mistake}'; known: {', '.join(MISTAKES)}")
    d = Derivation("hyena", "Hyena of order N is an exact PADRe instance of degree N + 1 "
                   f"(checked at N = {NUMERIC_ORDERS[0]}-{NUMERIC_ORDERS[-1]})")
    toml = load_spec("hyena")
    d.section("1. The original (naive twin)", """
`HyenaOperator.forward` of HazyResearch/safari `standalone_hyena.py`, input u `[B, L, D]`
(`hyena_operator` in `padre_compiler/derive/hyena.py`, explicit loops, no FFT):

    z  = in_proj(u)                                   # Linear(D, (N+1)D), bias
    uc = Conv1d((N+1)D, (N+1)D, 3, padding=2, groups=(N+1)D)(z)[..., :L]   # causal, bias
    x_0, ..., x_{N-1}, v = split(uc, D)               # v is the LAST slice
    for o in 0 .. N-2:  v = v ⊙ x_{N-1-o};  v = fftconv(v, k[o], bias[o])  # k[o] ∗ v + bias[o] ⊙ v
    y  = out_proj(v ⊙ x_0)                            # Linear(D, D), bias

`fftconv` is written as the causal sum y[t] = Σ_{s≤t} k[t-s] v[s] it computes (instances.md §1).
The long filters k are the implicit filter's output (an MLP of positional features with
exponential modulation) truncated to L: the PADRe mapping takes them as given tensors, so the
derivation holds for any filter values. Dropout is the identity (eval).""")
    table = [
        ("$A_1$, $B_1$", r"$\mathrm{DW}^{3,c}$ = `short_filter` rows of v; $W_v$ = rows "
         r"$ND..(N+1)D$ of `in_proj` (+ bias)"),
        ("$A_{i+1}$, $B_{i+1}$", r"$Y_{i+1} = x_{N-i}$ for $i = 1..N-1$, $Y_{N+1} = x_0$: "
         "the matching `short_filter` and `in_proj` rows (+ biases)"),
        ("$C_1$", "$I$ (the first gate is not preceded by a convolution)"),
        ("$C_i$, $i \\ge 2$", r"$T_{h_{i-2}} + \mathrm{diag}(b_{i-2})$: causal Toeplitz of "
         "`filter[i-2]`, skip `bias[i-2]` (long_conv with skip)"),
        ("$D_i$", "$I$"), ("$W$", r"$e_{N+1}$: only $Z_{N+1}$ enters $P$"),
        ("$L$", "0 (biases add lower degrees)"), ("$V$", "`out_proj` (+ bias)"),
        ("normalisation", "none"), ("degree", "N + 1 (3 for the default order 2)")]
    d.section("2. Mapping and PADRe form (`specs/hyena.toml`, order 2; order N: a spec with "
              "`family = \"hyena\"`, `order = N`)",
              common.latex_section(toml.graph(), table))
    same = _body(generate(toml).source) == _body(generate(hyena_spec(2)).source)
    d.check("TOML = DSL at order 2", "structural identity",
            "specs/hyena.toml and hyena_spec(order=2) compile to the same module", same,
            "generated module bodies identical" if same else "generated modules differ")

    sym_rows = []
    for order, n, dd in ((2, 4, 2), (3, 3, 2)):
        spec = hyena_spec(order, length=n)
        symb = {"in_proj.weight", "filter", "bias", "out_proj.weight"}
        res, _ = common.symbolic_identity(
            spec.graph(), lambda x, p, F, o=order: hyena_operator(x, p, o, F),
            shapes(order, dd, n), lambda p, F, o=order, dd=dd, n=n: mapping(
                p, F, o, dd, n, mistake), n, dd, symbolic=symb)
        d.check(f"order {order}, symbolic", "symbolic identity",
                f"twin(u) - spec(u) = 0 over QQ[u, w] at L = {n}, D = {dd}; in_proj, filters, "
                "skips and out_proj symbolic, short conv exact rationals", res.zero,
                f"{res.entries} entries, {res.monomials} monomials; degrees in u {res.degrees}")
        sym_rows.append(f"| {order} | {n} x {dd} | {res.degrees} | {res.monomials} | "
                        f"{'0' if res.zero else 'NONZERO'} |")
    d.section("3. Symbolic proof at small size", "\n".join([
        "Both sides expanded over QQ[u, w] (sympy's sparse polynomial ring), then subtracted.", "",
        "| order | L x D | degrees in u | monomials (twin) | difference |", "|---|---|---|---|---|",
        *sym_rows]))

    num_rows = []
    n, dd = 196, 64
    for order in NUMERIC_ORDERS:
        spec = toml if order == 2 else hyena_spec(order)
        p = random_original(order, dd, n, seed=order)
        u = np.random.default_rng(10 + order).standard_normal((2, n, dd))
        want = hyena_operator(u, p, order, common.Float)
        got = common.compiled_output(spec, dd, None, mapping(p, common.Float, order, dd, LENGTH,
                                                             mistake), u)
        err = common.rel_err(got, want)
        d.check(f"order {order}, numeric", "numeric (tol 1e-10)",
                f"compiled spec (FFT long conv) vs twin, float64, L = {n}, D = {dd}",
                err < common.EXACT_TOL, f"max relative error {fmt(err)}")
        num_rows.append(f"| {order} | {spec.degree} | {fmt(err)} |")
    d.section("4. Numeric check at realistic size", "\n".join([
        "float64, batch 2, L = 196 tokens, D = 64, random weights (seed = order), decaying "
        "random filters; the compiled module computes the long convolution by FFT.", "",
        "| order | degree | max relative error |", "|---|---|---|", *num_rows]))
    d.section("5. Complexity", common.cost_section(toml, dd))
    return common.finish(d, write, path)
