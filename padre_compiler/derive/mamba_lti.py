"""Mamba-1's SSM with a fixed step size (LTI) as an exact PADRe instance of degree 3
(padre-math.md §3.5(a)). The selective case (Δ depending on the input) is approximate: see
derive/mamba.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

from padre_compiler.derive import common
from padre_compiler.derive.common import Derivation, fmt
from padre_compiler.spec.loader import _build, load_spec
from padre_compiler.spec.model import Spec

MISTAKES = ("zoh_b",)  # zero-order hold instead of Euler for B: gain (e^{ΔA} - 1)/A, not Δ
LENGTH = 1024


# 1. the naive twin: selective_scan_ref of state-spaces/mamba, with a fixed step -----------------
def selective_scan_ref(u: np.ndarray, delta: np.ndarray, A: np.ndarray, B: np.ndarray,
                       C: np.ndarray, D: np.ndarray, F: Any) -> np.ndarray:
    """u, delta [B, D, L]; A [D, N]; B, C [B, N, L] (shared across channels); D [D].
    h_t = exp(δ_t A) ⊙ h_{t-1} + δ_t B_t u_t (ZOH on A, Euler on B); y_t = h_t C_t + D u_t."""
    b, d, n = u.shape
    delta_a = F.exp(delta[:, :, :, None] * A[None, :, None, :])  # [B, D, L, N]
    delta_b_u = delta[:, :, :, None] * B.transpose(0, 2, 1)[:, None] * u[:, :, :, None]
    h = F.zeros((b, d, A.shape[1]), u)
    ys = []
    for i in range(n):
        h = delta_a[:, :, i] * h + delta_b_u[:, :, i]
        ys.append((h * C[:, :, i][:, None, :]).sum(axis=-1))
    return np.stack(ys, axis=2) + u * D[None, :, None]


def ssm_constants(p: dict, F: Any) -> tuple[np.ndarray, np.ndarray]:
    """(A [D, N], Δ [D]): A = -exp(A_log), Δ = softplus(dt_proj.bias) (the fixed step: the
    dt_proj input is zero). Symbolic runs give A and Δ directly as symbols."""
    if "A" in p:
        return p["A"], p["delta"]
    return -np.exp(p["A_log"]), np.logaddexp(0.0, p["dt_proj.bias"])


def mamba_lti(x: np.ndarray, p: dict[str, np.ndarray], F: Any) -> np.ndarray:
    """x [B, L, D] (the scan input) -> out_proj(selective_scan(x, Δ, A, x W_B, x W_C, D))."""
    A, step = ssm_constants(p, F)
    b, n, _ = x.shape
    u = x.transpose(0, 2, 1)
    bm = (x @ p["x_proj.weight_B"].T).transpose(0, 2, 1)  # [B, N, L]
    cm = (x @ p["x_proj.weight_C"].T).transpose(0, 2, 1)
    delta = np.repeat(np.repeat(step[None, :, None], b, axis=0), n, axis=2)
    y = selective_scan_ref(u, delta, A, bm, cm, p["D"], F)
    return y.transpose(0, 2, 1) @ p["out_proj.weight"].T


def shapes(d: int, ns: int) -> dict[str, tuple[int, ...]]:
    return {"x_proj.weight_B": (ns, d), "x_proj.weight_C": (ns, d), "D": (d,),
            "out_proj.weight": (d, d), "A": (d, ns), "delta": (d,)}


# 2. the spec and the mapping ---------------------------------------------------------------------
def mamba_spec(states: int = 16, length: int = LENGTH) -> Spec:
    data = copy.deepcopy(load_spec("mamba_lti").raw)
    data["branch"][0]["channel"]["times"] = states
    data["branch"][1]["channel"][0]["out"] = states
    data["branch"][2]["channel"][0]["out"] = states
    data["mix"][1]["token"]["length"] = length
    data["output"]["projection"][0]["times"] = states
    return _build(data, "specs/mamba_lti.toml", "mamba_lti")


def kernel(p: dict, F: Any, length: int, mistake: str | None = None) -> np.ndarray:
    """κ[(d, n), k] = gain[d, n] · exp(Δ_d A[d, n])^k, gain = Δ_d (Euler on B)."""
    A, step = ssm_constants(p, F)
    decay = F.exp(step[:, None] * A)
    gain = F.zoh_gain(decay, A) if mistake == "zoh_b" else \
        np.repeat(step[:, None], A.shape[1], axis=1)
    d, ns = A.shape
    filt = F.zeros((d, ns, length), A)
    power = gain
    for k in range(length):
        filt[:, :, k] = power
        power = power * decay
    return filt.reshape(d * ns, length)


def mapping(p: dict, F: Any, length: int, mistake: str | None = None) -> dict:
    d, ns = p["x_proj.weight_B"].shape[1], p["x_proj.weight_B"].shape[0]
    w1 = np.repeat(p["D"][:, None], ns, axis=1) * F.inv_states(ns)  # D[d] / N_s on each slot
    w3 = F.zeros((d * ns,), p["D"]) + 1
    return {"w_b_weight": p["x_proj.weight_B"], "w_c_weight": p["x_proj.weight_C"],
            "ssm_filter": kernel(p, F, length, mistake), "output_w1_scale": w1.reshape(-1),
            "output_w3_scale": w3, "out_proj_weight": p["out_proj.weight"]}


class _Float(common.Float):
    exp = staticmethod(np.exp)

    @staticmethod
    def zoh_gain(decay: np.ndarray, A: np.ndarray) -> np.ndarray:
        return (decay - 1.0) / A

    @staticmethod
    def inv_states(ns: int) -> float:
        return 1.0 / ns


def random_original(d: int, ns: int, seed: int) -> dict[str, np.ndarray]:
    """Mamba's initialisation: A_log = log(1..N_s) (S4D-real), dt log-uniform in [1e-3, 0.1]
    (dt_proj.bias its inverse softplus), D = 1 (+ noise here), projections random."""
    rng = np.random.default_rng(seed)
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), d))
    return {"x_proj.weight_B": rng.standard_normal((ns, d)) / np.sqrt(d),
            "x_proj.weight_C": rng.standard_normal((ns, d)) / np.sqrt(d),
            "D": 1.0 + 0.1 * rng.standard_normal(d),
            "out_proj.weight": rng.standard_normal((d, d)) / np.sqrt(d),
            "A_log": np.log(np.tile(np.arange(1, ns + 1, dtype=float), (d, 1))),
            "dt_proj.bias": dt + np.log(-np.expm1(-dt))}


def _ring_functions(d: int, ns: int) -> tuple[tuple[str, ...], Any]:
    """Symbolic discretisation: e^{Δ_d A[d,n]} and (e^{Δ_d A[d,n]} - 1)/A[d,n] as generators."""
    names = tuple(f"a_{i}_{j}" for i in range(d) for j in range(ns)) + \
        tuple(f"g_{i}_{j}" for i in range(d) for j in range(ns))

    def build(ring: Any, ex: dict, params: dict) -> dict:
        a = np.array([ex[f"a_{i}_{j}"] for i in range(d) for j in range(ns)],
                     dtype=object).reshape(d, ns)
        g = np.array([ex[f"g_{i}_{j}"] for i in range(d) for j in range(ns)],
                     dtype=object).reshape(d, ns)
        table = {params["delta"][i] * params["A"][i, j]: a[i, j]
                 for i in range(d) for j in range(ns)}
        return {"exp": np.vectorize(lambda v: table[v], otypes=[object]),
                "zoh_gain": lambda decay, A: g,
                "inv_states": lambda k: ring(1) / k}
    return names, build


def prove(write: bool = False, path: Path | None = None, mistake: str | None = None) -> Derivation:
    if mistake not in (None, *MISTAKES):
        raise ValueError(f"unknown mistake '{mistake}'; known: {', '.join(MISTAKES)}")
    d = Derivation("mamba_lti", "Mamba-1 with a fixed step (LTI) is an exact PADRe instance "
                   "of degree 3")
    spec = load_spec("mamba_lti")
    d.section("1. The original (naive twin)", """
`selective_scan_ref` of state-spaces/mamba (`mamba_ssm/ops/selective_scan_interface.py`), the
loop over L as written there, with the Mamba block's projections around it
(`selective_scan_ref`, `mamba_lti` in `padre_compiler/derive/mamba_lti.py`). X `[B, L, D]` is
the scan input (the block's x after its causal conv and SiLU; D = d_inner):

    B = x_proj_B(x), C = x_proj_C(x)            # [B, N_s, L], shared across channels
    Δ = softplus(dt_proj.bias)                  # fixed step: dt_proj's input is 0 (LTI)
    A = -exp(A_log)                             # [D, N_s]
    deltaA = exp(Δ ⊗ A);  deltaB_u = Δ · B · u  # zero-order hold on A, EULER on B
    h_t = deltaA_t ⊙ h_{t-1} + deltaB_u_t;  y_t = Σ_n h_t[:, n] C_t[n];  y = y + D ⊙ u
    out = out_proj(y)                           # no bias; the SiLU(z) gate is omitted here

Unrolled, y_t[d] = Σ_n C_t[n] Σ_{s≤t} Δ_d e^{(t-s) Δ_d A[d,n]} B_s[n] x_s[d] + D[d] x_t[d]: a
causal Toeplitz filter per (d, n) applied to x ⊗ B, then a product with C and a sum over n.""")
    table = [
        ("$A_1$, $B_1$", r"$I$; $E_{16}$: slot $(d, n)$ holds $x[d]$ (expand, times 16)"),
        ("$A_2$, $B_2$", r"$I$; $W_B F_D$, $W_B$ = `x_proj` B rows$^\top$; slot $(d, n)$ holds "
         "$B[n]$"),
        ("$A_3$, $B_3$", r"$I$; $W_C F_D$, $W_C$ = `x_proj` C rows$^\top$"),
        ("$C_1$, $D_1$", "$I$, $I$"),
        ("$C_2$", r"causal Toeplitz per $(d, n)$: $\kappa_{d,n}[k] = \Delta_d\, e^{k \Delta_d "
         r"A[d,n]}$ (long_conv)"), ("$D_2$", "$I$"),
        ("$W$", r"$W_1[(d,n)] = D[d]/16$, $W_2 = 0$, $W_3 = 1$"), ("$L$", "0"),
        ("$V$", r"$E_{16}^\top$ (sum over n) then `out_proj`"),
        ("normalisation", "none"), ("degree", "3 in the scan input (1 from the skip D)")]
    d.section("2. Mapping and PADRe form (`specs/mamba_lti.toml`, N_s = 16)",
              common.latex_section(spec.graph(), table) + """

The filter κ is computed from (A, Δ) by the mapping (`kernel`): the step enters only the
filter, so the instance holds for every fixed Δ; Euler's gain Δ_d multiplies every tap.""")

    dd, ns, n = 2, 2, 3
    names, build = _ring_functions(dd, ns)
    g = mamba_spec(ns, length=n).graph()
    res, _ = common.symbolic_identity(
        g, mamba_lti, shapes(dd, ns), lambda p, F: mapping(p, F, n, mistake), n, dd,
        extra=names, field_kw=build)
    d.check("LTI scan, symbolic", "symbolic identity",
            f"twin(X) - spec(X) = 0 over QQ[x, W_B, W_C, D, W_out, A, Δ, a] at L = {n}, "
            f"D = {dd}, N_s = {ns}, with a[d, n] = exp(Δ_d A[d, n]) a free symbol", res.zero,
            f"{res.entries} entries, {res.monomials} monomials; degrees in x {res.degrees}")
    d.section("3. Symbolic proof at small size", f"""
Both sides over QQ[x, W_B, W_C, D, W_out, A, Δ, a]: the discretised decay a[d, n] =
exp(Δ_d A[d, n]) is one free generator per (d, n) (the twin's `exp` returns it), so the identity
holds for every step and every A. Result: difference {'0' if res.zero else 'NONZERO'}, degrees
in x {res.degrees}, {res.monomials} monomials in the twin's output.""")

    # the twin and the mapping's filter both read A and Δ through ssm_constants and take
    # exp from _Float: each against its definition (Mamba: A = -exp(A_log), Δ = softplus)
    common.function_check(d, "discretisation", [
        ("exp", _Float.exp, sp.exp(common.T), (-10.0, 0.0)),
        ("A(A_log)", lambda v: ssm_constants({"A_log": v, "dt_proj.bias": v}, _Float)[0],
         -sp.exp(common.T), (-3.0, 3.0)),
        ("Δ(dt_proj.bias)", lambda v: ssm_constants({"A_log": v, "dt_proj.bias": v}, _Float)[1],
         sp.log(1 + sp.exp(common.T)), (-9.0, 3.0)),
        ("1/N_s", lambda v: _Float.inv_states(16), sp.Rational(1, 16), (0.0, 1.0)),
        ("1/N_s at N_s = 3", lambda v: _Float.inv_states(3), sp.Rational(1, 3), (0.0, 1.0))])
    dd, ns, n = 64, 16, 196
    p = random_original(dd, ns, seed=7)
    x = np.random.default_rng(8).standard_normal((2, n, dd))
    want = mamba_lti(x, p, _Float)
    got = common.compiled_output(spec, dd, None, mapping(p, _Float, LENGTH, mistake), x)
    err = common.rel_err(got, want)
    d.check("LTI scan, numeric", "numeric (tol 1e-10)",
            f"compiled spec (FFT long conv over D·N_s channels) vs the scan loop, float64, "
            f"L = {n}, D = {dd}, N_s = {ns}, Mamba's initialisation", err < common.EXACT_TOL,
            f"max relative error {fmt(err)}")
    d.section("4. Numeric check at realistic size", f"""
float64, batch 2, L = {n}, D = {dd}, N_s = {ns}; A_log = log(1..16), Δ log-uniform in
[1e-3, 0.1] (Mamba's init, seed 7), input N(0, 1) (seed 8). Max relative error **{fmt(err)}**.""")
    d.section("5. Complexity", common.cost_section(spec, 64) + """

The Toeplitz filter is applied by FFT (N log N per channel, D·N_s channels). The same filter
is a diagonal linear recurrence, so a scan evaluates it in O(N D N_s): linear in N; the
compiler has no recurrent lowering yet.""")
    d.section("6. The selective scan", """
With Δ depending on the input the instance is approximate only: see `padre prove mamba`
(proofs/mamba.md), which builds the Chebyshev/binomial construction of padre-math.md §3.5(b).""")
    return common.finish(d, write, path)
