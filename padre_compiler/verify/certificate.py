"""Equivalence certificates: the optimised graph and the generated code compute the spec.

Graph certificate (exact identity testing). The spec's graph and the optimised graph are both
evaluated over GF(p) at the same random inputs, weights and normaliser values, k times. Both
are polynomials of total degree <= d in those variables; if they differed, by Schwartz-Zippel
they would agree at a random point with probability <= d/p, so a wrong rewrite survives all k
trials with probability <= (d/p)^k.

Normalisation hooks are not polynomial. They are certified as uninterpreted functions:
normalize(x) = x ⊙ phi(x), with phi a random function of each column (l1_tokens) or of each
token's head slice (l2_rows), drawn afresh per trial. The certificate then holds for every such
phi, in particular for the true 1 / (norm + eps), provided the optimised graph applies the
normalisers to equal arguments (which is what is checked). Polynomial surrogates are
polynomials with exact binary-rational coefficients and are certified as such.

Code certificate. The generated module runs in float64 on small-integer inputs and weights,
where every sum and product is an integer below 2^53 and so exact; its output must equal the
exact integer evaluation of the spec bit for bit (FFT long convolutions round at ~1e-16
relative, so their outputs must round to the exact integers). Specs with surrogates or
normalisers have no integer-exact evaluation: their code check is numeric, in float64 at two
probes (`_check_code_numeric`), and the graph certificate carries the exact guarantee.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from padre_compiler.backends.reference import INIT_INPUT_SCALE, run_graph
from padre_compiler.ir.graph import Graph, is_valid_dim, width_step
from padre_compiler.ir.ops import EvalContext, kernel2d
from padre_compiler.verify.degree import total_degree
from padre_compiler.verify.field import GF, P, element, random_gf
from padre_compiler.verify.lowering import Lowering, check_lowering


@dataclass(frozen=True)
class CodeCheck:
    applicable: bool
    passed: bool
    detail: str


@dataclass(frozen=True)
class Certificate:
    spec: str
    trials: int
    prime: int
    degree: int
    tokens: int
    dim: int
    passed: bool
    failed_after: tuple[str, ...] = ()
    normalisers: str = "none"
    code: CodeCheck | None = None
    seconds: float = 0.0
    passes: tuple[str, ...] = field(default=())

    @property
    def bound(self) -> float:
        """Probability that a wrong identity survived every trial (0.0 once it underflows)."""
        return (self.degree / self.prime) ** self.trials

    @property
    def bound_text(self) -> str:
        """The bound in scientific notation, from its logarithm where the float underflows."""
        if self.bound > 0 or self.degree == 0:
            return f"{self.bound:.1e}"
        exponent = self.trials * math.log10(self.degree / self.prime)
        mantissa, power = 10 ** (exponent - math.floor(exponent)), math.floor(exponent)
        return f"{mantissa:.1f}e{power:+04d}"

    def __str__(self) -> str:
        verdict = "passed" if self.passed else f"FAILED after {', '.join(self.failed_after)}"
        lines = [f"graph certificate: optimised graph == spec over GF({self.prime}), "
                 f"{self.trials} trials at N={self.tokens}, D={self.dim}: {verdict}; "
                 f"total degree {self.degree}, a wrong identity survives with probability "
                 f"<= ({self.degree}/{self.prime})^{self.trials} = {self.bound_text}"]
        if self.normalisers != "none":
            lines.append(f"normalisers: {self.normalisers}")
        if self.code is not None:
            state = ("passed" if self.code.passed else "FAILED") if self.code.applicable \
                else "not applicable"
            lines.append(f"code certificate: {state}: {self.code.detail}")
        return "\n".join(lines)


def _oracle(salt: bytes) -> Any:
    """phi for normalize(x) = x ⊙ phi(x): a salted hash of each column / head slice into GF(p)."""

    def phi(x: GF, attrs: dict[str, Any]) -> GF:
        # normalisers of another kind or eps are other functions: their oracles differ
        key = salt + repr((attrs["kind"], attrs["eps"])).encode()

        def digest(values: np.ndarray) -> int:
            h = hashlib.blake2b(key + np.ascontiguousarray(values).tobytes(), digest_size=8)
            return int.from_bytes(h.digest(), "little") % P

        arr = np.asarray(x).view(np.ndarray)
        b, n, w = arr.shape
        if attrs["kind"] == "l1_tokens":  # one value per (batch, channel), shared by all tokens
            vals = [[digest(arr[i, :, c]) for c in range(w)] for i in range(b)]
            return GF(np.array(vals, dtype=np.int64)[:, None, :])
        h = attrs["heads"]  # one value per (batch, token, head), shared by the head's channels
        rows = arr.reshape(b, n, h, w // h)
        vals = [[[digest(rows[i, t, g]) for g in range(h)] for t in range(n)] for i in range(b)]
        scale = np.repeat(np.array(vals, dtype=np.int64), w // h, axis=2)
        return GF(scale)

    return phi


def field_context(grid: tuple[int, int] | None, salt: bytes) -> EvalContext:
    return EvalContext(grid=grid, abs=None, sqrt=None, const=lambda v: GF(element(v)),
                       opaque_norm=_oracle(salt))


def random_field_point(g: Graph, dim: int, tokens: int,
                       rng: np.random.Generator) -> tuple[GF, dict[str, GF]]:
    x = random_gf(rng, (1, tokens, dim))
    params = {name: random_gf(rng, decl.concrete(dim)) for name, decl in g.decls.items()}
    return x, params


def certify_graphs(spec_name: str, reference: Graph, stages: list[tuple[str, Graph]], *,
                   dim: int, tokens: int, grid: tuple[int, int] | None, trials: int = 3,
                   seed: int = 0) -> Certificate:
    """Certify that the last graph of `stages` (name, graph) equals `reference` as a
    polynomial; on a mismatch, name the first stage where it appears."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    failed: list[str] = []
    for trial in range(trials):
        x, params = random_field_point(reference, dim, tokens, rng)
        ctx = field_context(grid, salt=f"{seed}:{trial}".encode())

        def value(g: Graph, x: GF = x, params: dict = params, ctx: EvalContext = ctx) -> Any:
            return np.asarray(run_graph(g, x, params, ctx)).view(np.ndarray)

        expected = value(reference)
        if not np.array_equal(value(stages[-1][1]), expected):
            failed = [next(name for name, g in stages if not np.array_equal(value(g), expected))]
            break
    normalised = any(reference.node(n).op == "normalize" for n in reference.g.nodes)
    return Certificate(
        # Schwartz-Zippel bounds a nonzero difference of degree <= the larger of the two
        spec=spec_name, trials=trials, prime=P,
        degree=max(total_degree(reference), total_degree(stages[-1][1])), tokens=tokens,
        dim=dim, passed=not failed, failed_after=tuple(failed),
        normalisers="uninterpreted functions of their column (l1_tokens) or token head slice "
                    "(l2_rows)" if normalised else "none",
        seconds=time.perf_counter() - t0, passes=tuple(name for name, _ in stages))


def _int_params(g: Graph, dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: rng.integers(-2, 3, size=decl.concrete(dim)).astype(np.int64)
            for name, decl in g.decls.items()}


def check_code(module: Any, spec_graph: Graph, *, dim: int, tokens: int,
               grid: tuple[int, int] | None, seed: int = 0, batch: int = 2,
               lowering: bool = True) -> CodeCheck:
    """The generated module in float64 on small integers equals the spec's exact value.
    lowering=False skips holding the eager twin to the reference (numeric checks), for
    callers that checked this graph's twin at these sizes already (mutation testing)."""
    import torch

    ops = {spec_graph.node(n).op for n in spec_graph.g.nodes}
    rng = np.random.default_rng(seed)
    if ops & {"poly", "normalize"}:
        return _check_code_numeric(module, spec_graph, dim, tokens, grid, batch, rng,
                                   lowering)
    x = rng.integers(-2, 3, size=(batch, tokens, dim)).astype(np.int64)
    params = _int_params(spec_graph, dim, rng)
    ctx = EvalContext(grid=grid, abs=None, sqrt=None, const=Fraction)
    # |value| of every intermediate is bounded by the graph run on |x| and |weights|
    bound = run_graph(spec_graph, np.abs(x).astype(object),
                      {k: np.abs(v).astype(object) for k, v in params.items()}, ctx)
    if max((abs(int(v)) for v in np.asarray(bound).flat), default=0) >= 2**52:
        return CodeCheck(False, True, f"values exceed 2^52 at N={tokens}, D={dim}; "
                                      "use a smaller size for an exact check")
    exact = np.asarray(run_graph(spec_graph, x.astype(object),
                                 {k: v.astype(object) for k, v in params.items()}, ctx),
                       dtype=np.float64)
    with torch.no_grad():
        out = _load(module, params)(torch.tensor(x, dtype=torch.float64)).numpy()
    where = f"N={tokens}, D={dim}, batch {batch}, integers in [-2, 2]"
    if "long_conv" in ops:  # FFT rounding: exact after rounding to the nearest integer
        ok = bool(np.array_equal(np.rint(out), exact)) and float(np.abs(out - exact).max(
            initial=0.0)) < 1e-3
        return CodeCheck(True, ok, f"float64 output rounds to the exact integers ({where}; "
                                   "FFT long convolutions)")
    ok = bool(np.array_equal(out, exact))
    return CodeCheck(True, ok, f"float64 output equals the exact integer evaluation bit for "
                               f"bit ({where})")


def _load(module: Any, params: dict[str, np.ndarray]) -> Any:
    import torch

    module = module.double()
    module.load_state_dict({k: torch.tensor(params[k], dtype=torch.float64)
                            for k in module.state_dict()})
    return module


def _check_code_numeric(module: Any, spec_graph: Graph, dim: int, tokens: int,
                        grid: tuple[int, int] | None, batch: int,
                        rng: np.random.Generator, lowering: bool = True) -> CodeCheck:
    """Surrogates (binary-fraction coefficients) and normalisers (|.|, sqrt, division) have no
    integer-exact evaluation: compare in float64 with the reference, within 1e-10 relative or
    four times the eager twin's error (the spec lowered op by op, in float64), whichever is
    larger: a degree-400 surrogate polynomial cancels past 1e-10, and the twin shows by how
    much at each probe. The twin shares the module's lowering helpers, so it is first held to
    the reference in long double (padre_compiler.verify.lowering). Two probes: weights around
    each op's default at x ~ N(0, 1), where every term is large; and weights in the spec's
    init ranges at x / 100, where low-degree terms lead (at the first, mamba's degree-403 terms
    bury its skip term D ⊙ x below float64's resolution; at the second it is most of the
    output). Both must pass; the report names the first that fails."""
    from padre_compiler.compiler import eager_class  # the compiler certifies through here

    seed = int(rng.integers(1 << 30))
    x = rng.standard_normal((batch, tokens, dim))
    twin = eager_class(spec_graph, "certified")
    probes = [_numeric_probe(module, twin, spec_graph, dim, grid, x, seed, False, lowering),
              _numeric_probe(module, twin, spec_graph, dim, grid, x * INIT_INPUT_SCALE, seed,
                             True, lowering)]
    where = f"N={tokens}, D={dim}, batch {batch}"
    wrong = [low for _, _, low in probes if low is not None and not low.ok]
    if wrong:
        return CodeCheck(True, False, f"the spec lowered op by op is off the reference by "
                         f"{wrong[0].error:.1e} > {wrong[0].allowed:.1e} relative in float64 "
                         f"({where}): a lowering helper that every compiled module shares "
                         "is wrong (backends/pytorch.py)")
    failing = [(e, t) for e, t, _ in probes if not e <= t]  # NaN fails
    err, tol = failing[0] if failing else max(((e, t) for e, t, _ in probes),
                                              key=lambda p: p[0] / p[1])
    verdict = ">" if failing else "<="
    if not lowering:
        lowered = "checked once, not per module"
    elif any(low is None for _, _, low in probes):
        lowered = "unchecked: long double is float64 here"
    else:
        lowered = "checked against the reference in long double"
    return CodeCheck(True, not failing,
                     f"numeric, float64 relative error {err:.1e} {verdict} {tol:.1e} "
                     f"(surrogates or normalisers: no exact evaluation; 1e-10, or 4x the "
                     f"error of the spec lowered op by op, {lowered}; the worse of two "
                     f"probes; {where})")


def _numeric_probe(module: Any, twin: type, spec_graph: Graph, dim: int,
                   grid: tuple[int, int] | None, x: np.ndarray, seed: int,
                   init_ranges: bool, lowering: bool = True
                   ) -> tuple[float, float, Lowering | None]:
    """(relative error of the module in float64, its allowance, the twin's lowering check) at
    x and random weights."""
    import torch

    from padre_compiler.backends.reference import random_params

    params = random_params(spec_graph.decls, dim, seed=seed, init_ranges=init_ranges)
    ref = np.asarray(run_graph(spec_graph, x, params, EvalContext(grid=grid)))
    scale = max(np.abs(ref).max(initial=0.0), 1e-300)

    def run(m: Any) -> np.ndarray:
        with torch.no_grad():
            return _load(m, params)(torch.tensor(x)).numpy()

    twin_out = run(twin(dim, grid) if grid else twin(dim))
    twin_error = float(np.abs(twin_out - ref).max(initial=0.0) / scale)
    error = float(np.abs(run(module) - ref).max(initial=0.0) / scale)
    return (error, float64_allowance(twin_error),
            check_lowering(twin_out, spec_graph, x, params, grid) if lowering else None)


def float64_allowance(twin_error: float) -> float:
    """The relative float64 error a module may have where the spec lowered op by op (its eager
    twin) is off by `twin_error`: 1e-10, or four times the twin's where the graph's
    conditioning makes that larger."""
    return max(1e-10, 4 * twin_error)


def small_size(layout: str, dim: int, grid: tuple[int, int] | None, tokens: int,
               max_dim: int = 32, max_side: int = 8, fixed_dim: int | None = None,
               graph: Graph | None = None) -> tuple[int, tuple[int, int] | None, int]:
    """A size at which a compile's certificate is cheap: the same graph, smaller D and N. D is
    the largest width <= max_dim at which `graph` is valid (heads divide it), else `dim`; it
    stays `fixed_dim` for a spec valid at one width only."""
    heads = width_step(graph) if graph is not None else 1  # 2 channels a head at least
    small_dim = fixed_dim or _largest_valid(graph, min(dim, max(max_dim, 2 * heads)), dim)
    rows, columns, length = _reach(graph)
    if layout == "grid2d" and grid is not None:  # not square unless the grid is: a square
        # one reads the same transposed (an 11 x 11 kernel made every bundled one 6 x 6)
        height = min(grid[0], max(max_side, rows))
        width = min(grid[1], max(max_side + 1, columns, height + 1))  # wider than tall, or
        if width == height:  # where the grid is too narrow for that, taller than wide
            height = min(grid[0], width + 1)
        return small_dim, (height, width), height * width
    return small_dim, None, min(tokens, max(max_side * max_side, length))


def _reach(graph: Graph | None) -> tuple[int, int, int]:
    """The fewest rows, columns and sequence tokens at which every tap of every depthwise
    conv in `graph` joins two tokens: a tap at offset o needs |o| + 1 of them (a centred
    k-tap window reaches k // 2; a causal one k - 1)."""
    rows = columns = length = 1
    for _, node, _ in graph.items() if graph is not None else ():
        if node.op == "dwconv2d":
            kh, kw = kernel2d(node.a)
            rows, columns = max(rows, kh // 2 + 1), max(columns, kw // 2 + 1)
        elif node.op == "dwconv1d":
            length = max(length, node.a["kernel"])
    return rows, columns, length


def _largest_valid(graph: Graph | None, cap: int, fallback: int) -> int:
    if graph is None:
        return cap
    return next((d for d in range(cap, 0, -1) if is_valid_dim(graph, d)), fallback)
