"""Conv2Former's convolutional modulation as a PADRe instance (padre-math.md §3.2).

Paper equation: exact, degree 2. Official code (GELU before the depthwise conv): approximate,
through a Chebyshev surrogate p_q of GELU; degree q + 1.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

from padre_compiler.derive import common
from padre_compiler.derive.common import Derivation, fmt
from padre_compiler.spec.loader import _build, load_spec
from padre_compiler.spec.surrogates import FUNCTIONS, surrogate_error

MISTAKES = ("hadamard_branch",)  # the DWConv on the value branch instead of the gate branch


# 1. the naive twin: SpatialAttention of HVision-NKU/Conv2Former, channels-first -------------------
def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """nn.Conv2d(C, C, 1): x [B, C, H, W], weight [Co, Ci, 1, 1]."""
    b, c, h, w = x.shape
    out = np.empty((b, weight.shape[0], h, w), dtype=x.dtype)
    for o in range(weight.shape[0]):
        acc = x[:, 0] * weight[o, 0, 0, 0]
        for i in range(1, c):
            acc = acc + x[:, i] * weight[o, i, 0, 0]
        out[:, o] = acc + bias[o]
    return out


def dwconv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, F: Any) -> np.ndarray:
    """nn.Conv2d(C, C, k, padding=k // 2, groups=C): weight [C, 1, k, k], cross-correlation."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    p = k // 2
    xp = F.zeros((b, c, h + 2 * p, w + 2 * p), x)
    xp[:, :, p:p + h, p:p + w] = x
    out = F.zeros((b, c, h, w), x)
    for i in range(k):
        for j in range(k):
            out = out + xp[:, :, i:i + h, j:j + w] * weight[:, 0, i, j][None, :, None, None]
    return out + bias[None, :, None, None]


def spatial_attention(x: np.ndarray, p: dict[str, np.ndarray], F: Any,
                      gelu: bool = False) -> np.ndarray:
    """a = DWConv(GELU?(Conv1x1(x))); v = Conv1x1(x); proj(a ⊙ v). x: the LayerNormed input."""
    a = conv1x1(x, p["a.0.weight"], p["a.0.bias"])
    if gelu:
        a = F.gelu(a)
    a = dwconv(a, p["a.2.weight"], p["a.2.bias"], F)
    v = conv1x1(x, p["v.weight"], p["v.bias"])
    return conv1x1(a * v, p["proj.weight"], p["proj.bias"])


def layer_norm_cf(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Conv2Former's channels-first LayerNorm (biased variance), affine at its init (1, 0)."""
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def shapes(c: int, k: int) -> dict[str, tuple[int, ...]]:
    return {"a.0.weight": (c, c, 1, 1), "a.0.bias": (c,), "a.2.weight": (c, 1, k, k),
            "a.2.bias": (c,), "v.weight": (c, c, 1, 1), "v.bias": (c,),
            "proj.weight": (c, c, 1, 1), "proj.bias": (c,)}


# 2. the mapping -----------------------------------------------------------------------------------
def mapping(p: dict[str, np.ndarray], F: Any = None, mistake: str | None = None) -> dict:
    gate, value = ("a.0", "v") if mistake != "hadamard_branch" else ("v", "a.0")
    return {"w1_weight": p[f"{gate}.weight"][:, :, 0, 0], "w1_bias": p[f"{gate}.bias"],
            "dwconv_weight": p["a.2.weight"][:, 0], "dwconv_bias": p["a.2.bias"],
            "w2_weight": p[f"{value}.weight"][:, :, 0, 0], "w2_bias": p[f"{value}.bias"],
            "w3_weight": p["proj.weight"][:, :, 0, 0], "w3_bias": p["proj.bias"]}


def to_tokens(x: np.ndarray) -> np.ndarray:
    """[B, C, H, W] -> [B, H*W, C], row-major tokens (the spec's layout)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).transpose(0, 2, 1)


def from_tokens(x: np.ndarray, h: int, w: int) -> np.ndarray:
    b, _, c = x.shape
    return x.transpose(0, 2, 1).reshape(b, c, h, w)


def random_original(c: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, s in shapes(c, k).items():
        fan = int(np.prod(s[1:])) if len(s) > 1 else c
        out[name] = rng.standard_normal(s) / np.sqrt(fan if name != "a.2.weight" else k * k)
    return out


def gelu_spec(order: int, lo: float, hi: float):
    data = dict(load_spec("conv2former_gelu").raw)
    data["branch"] = [dict(b) for b in data["branch"]]
    data["branch"][0]["activation"] = {"fn": "gelu", "order": order, "range": [lo, hi]}
    return _build(data, "specs/conv2former_gelu.toml", "conv2former_gelu")


def _poly_coeffs(spec) -> tuple[float, ...]:
    return next(node for _, node, _ in spec.graph().items() if node.op == "poly").a["coeffs"]


def prove(write: bool = False, path: Path | None = None, mistake: str | None = None) -> Derivation:
    if mistake not in (None, *MISTAKES):
        raise ValueError(f"unknown mistake '{mistake}'; known: {', '.join(MISTAKES)}")
    d = Derivation("conv2former", "Conv2Former is a PADRe instance (degree 2; GELU variant "
                   "approximate)")
    spec = load_spec("conv2former")
    k = 11
    d.section("1. The original (naive twin)", """
Conv2Former `SpatialAttention` (HVision-NKU/Conv2Former, `models/conv2former.py`), channels-first
`[B, C, H, W]`, input `x̃ = LN_cf(x)` (channels-first LayerNorm, biased variance, eps 1e-6):

    a = Conv2d(C, C, k, padding=k//2, groups=C)( GELU( Conv2d(C, C, 1)(x̃) ) )   # self.a
    v = Conv2d(C, C, 1)(x̃)                                                      # self.v
    out = Conv2d(C, C, 1)(a ⊙ v)                                                # self.proj

The paper's equation has no GELU (exact instance); the code has it (approximate instance). The
twin (`spatial_attention` in `padre_compiler/derive/conv2former.py`) loops over the k×k taps and
the channels with ring operations only, so it runs in float64 and over sympy's polynomial ring.
The LayerNorm is not polynomial and precedes the module: PADRe's X is x̃ (tokens row-major).""")
    table = [
        ("$A_1$", r"$\mathrm{DW}^{11\times11}$ with weight `a.2.weight[:, 0]`, bias `a.2.bias`"),
        ("$B_1$", r"$W_1$ = `a.0.weight[:, :, 0, 0]`$^\top$ (+ `a.0.bias`)"),
        ("$A_2$, $B_2$", r"$I$; $W_2$ = `v.weight[:, :, 0, 0]`$^\top$ (+ `v.bias`)"),
        ("$C_1$, $D_1$", "$I$, $I$"),
        ("$W$", "$(0, 1)$: only $Z_2$ enters $P$"), ("$L$", "0 (biases add degree 0, 1 terms)"),
        ("$V$", r"$W_3$ = `proj.weight[:, :, 0, 0]`$^\top$ (+ `proj.bias`)"),
        ("normalisation", "none (LayerNorm precedes the module)"), ("degree", "2")]
    d.section("2. Mapping and PADRe form (`specs/conv2former.toml`)",
              common.latex_section(spec.graph(), table) + """

GELU variant (`specs/conv2former_gelu.toml`): the same table with `activation = gelu` on
branch 1, i.e. $Y_1 = A_1(p_q(X W_1 + b_1))$ where $p_q$ is the degree-q Chebyshev interpolant
of GELU on the range of $X W_1 + b_1$ actually reached: degree q + 1.""")

    # 3. symbolic identity at small size (a grid that is not square: H and W swapped fails)
    c, grid = 2, (2, 3)
    res, _ = common.symbolic_identity(
        spec.graph(), lambda x, p, F: to_tokens(spatial_attention(
            from_tokens(x, *grid), p, F)), shapes(c, k),
        lambda p, F: mapping(p, F, mistake), grid[0] * grid[1], c, grid=grid,
        symbolic={n for n in shapes(c, k) if n != "a.2.weight"})
    d.check("paper equation, symbolic", "symbolic identity",
            f"twin(X) - spec(X) = 0 over QQ[x, w] at N = {grid[0]}x{grid[1]} tokens, C = {c} "
            "(all weights "
            "symbolic except the 11x11 kernel: exact rationals)", res.zero,
            f"{res.entries} entries, {res.monomials} monomials; degrees in x {res.degrees}")
    # GELU variant: structure exact with GELU replaced by the surrogate polynomial
    gspec = gelu_spec(4, -3.0, 3.0)
    coeffs = _poly_coeffs(gspec)

    def ring_gelu(ring: Any, extras: dict, params: dict) -> dict:
        def g(v: np.ndarray) -> np.ndarray:
            u = (2 * v - ring(0)) * ring(sp.Rational(1, 6))  # u = (2v - (lo + hi)) / (hi - lo)
            cs = [ring(sp.Rational(ck)) for ck in coeffs]
            b1 = b2 = 0 * u
            for ck in reversed(cs[1:]):
                b1, b2 = 2 * u * b1 - b2 + ck, b1
            return u * b1 - b2 + cs[0]
        return {"gelu": g}

    res_g, _ = common.symbolic_identity(
        gspec.graph(), lambda x, p, F: to_tokens(spatial_attention(
            from_tokens(x, 1, 2), p, F, gelu=True)), shapes(1, k),
        lambda p, F: mapping(p, F, mistake), 2, 1, grid=(1, 2),
        symbolic=set(shapes(1, k)), field_kw=ring_gelu)
    d.check("GELU variant, symbolic structure", "symbolic identity",
            "twin with GELU := p_4 (Chebyshev, [-3, 3]) equals the GELU spec over QQ[x, w] "
            "at N = 1x2, C = 1, every weight symbolic (the 11x11 kernel too: a flipped kernel "
            "fails)", res_g.zero,
            f"degrees in x {res_g.degrees} (p_4 has degree 4, so degree 5 = q + 1)")
    t = sp.Symbol("t")
    taylor = sp.series(t / 2 * (1 + sp.erf(t / sp.sqrt(2))), t, 0, 8).removeO()
    resid = sp.expand(taylor - sum(sp.Rational(ck) * sp.chebyshevt(i, t / 3)
                                   for i, ck in enumerate(coeffs)))
    lead = min(sp.Poly(resid, t).monoms())[0]
    d.section("3. Symbolic proof at small size", f"""
Both sides are expanded exactly over QQ[x, w] (sympy's sparse polynomial ring) and subtracted.
The GELU variant is approximate: the symbolic layer proves the *structure* (the module with GELU
replaced by its surrogate p_q equals the spec exactly); the residual is then the function error
GELU(t) - p_q(t), pushed through the depthwise conv and the Hadamard product. For p_4 on [-3, 3]
its Taylor expansion at 0 starts at degree {lead} in t = (X W_1 + b_1) (the interpolant does not
match GELU's value at 0 exactly), so the residual's leading degree in X is {lead} + 1 =
{lead + 1} after the product with X W_2; its size is measured below.""")

    # GELU is the twin's (Float.gelu) and the surrogate's target (FUNCTIONS): each against
    # its definition, so neither can cancel against the other side
    gelu = common.T / 2 * (1 + sp.erf(common.T / sp.sqrt(2)))
    common.function_check(d, "GELU", [
        ("twin GELU", common.Float.gelu, gelu, (-6.0, 6.0)),
        ("surrogate target GELU", FUNCTIONS["gelu"][0], gelu, (-6.0, 6.0))])

    # 4. numeric at realistic size
    h, w = 12, 16  # not square: a grid read with H and W swapped fails
    c = 64
    p = random_original(c, k, seed=1)
    rng = np.random.default_rng(2)
    xr = layer_norm_cf(rng.standard_normal((2, c, h, w)))
    x = to_tokens(xr)
    want = to_tokens(spatial_attention(xr, p, common.Float))
    got = common.compiled_output(spec, c, (h, w), mapping(p, None, mistake), x)
    err = common.rel_err(got, want)
    d.check("paper equation, numeric", f"numeric (tol {EXACT})",
            f"compiled spec vs twin, float64, N = {h}x{w}, C = {c}, random weights",
            err < common.EXACT_TOL, f"max relative error {fmt(err)}")
    reached: list[np.ndarray] = []  # the arguments the twin's GELU takes

    class Recorded(common.Float):
        @staticmethod
        def gelu(v: np.ndarray) -> np.ndarray:
            reached.append(v)
            return common.Float.gelu(v)

    want_g = to_tokens(spatial_attention(xr, p, Recorded, gelu=True))
    lo, hi = float(np.floor(reached[0].min())), float(np.ceil(reached[0].max()))
    rows = ["| surrogate degree q | spec degree | max abs GELU error on range | "
            "relative error of the module |", "|---|---|---|---|"]
    errs = []
    for q in (2, 4, 8, 12, 16):
        gs = gelu_spec(q, lo, hi)
        got_g = common.compiled_output(gs, c, (h, w), mapping(p, None, mistake), x)
        e = common.rel_err(got_g, want_g)
        errs.append(e)
        cf = _poly_coeffs(gs)
        rows.append(f"| {q} | {gs.degree} | {fmt(surrogate_error('gelu', cf, lo, hi))} | "
                    f"{fmt(e)} |")
    conv = all(b <= a * 1.05 for a, b in itertools.pairwise(errs)) and errs[-1] < 1e-3
    d.check("GELU variant, error vs degree", "approximation (measured)",
            f"Chebyshev surrogate of GELU on the reached range [{lo:g}, {hi:g}]: the module "
            "error decreases with q and is below 1e-3 at q = 16", conv,
            "errors " + ", ".join(fmt(e) for e in errs) + " at q = 2, 4, 8, 12, 16")
    d.section("4. Numeric check at realistic size", f"""
float64, batch 2, {h}x{w} tokens, C = {c}, weights drawn N(0, 1/fan_in) (seed 1), input x̃ =
LN_cf(N(0, 1)) (seed 2). Exact instance: max relative error **{fmt(err)}**.

GELU variant (approximate), same weights and input; the surrogate range is the range of
X W_1 + b_1 actually reached, rounded outward: [{lo:g}, {hi:g}].

""" + "\n".join(rows))
    d.section("5. Complexity", common.cost_section(spec, c))
    return common.finish(d, write, path)


EXACT = "1e-10"
