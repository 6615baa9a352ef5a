"""Explicit polynomials at small sizes: run the graph over a polynomial ring.

Each entry O[t, c] becomes a polynomial in the input symbols x_t_c (and, with symbolic
weights, in one symbol per weight entry) with exact rational coefficients. The reference rule
table is generic over the scalar field, so this is the same interpreter that checks compiled
code numerically; values live in sympy's sparse polynomial ring, which keeps them expanded.
A normalisation hook is not polynomial: as in the certificates, normalize(v) = v ⊙ phi(v)
with phi opaque, one symbol per value it takes (phi{k}_c for column c of the k-th
normaliser over tokens, phi{k}_t_h for token t and head h of one over a head's channels), so
the expansion is a polynomial in x and those symbols. The work is bounded so it never
dominates a compile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Any

import numpy as np
import sympy as sp

from padre_compiler.backends.reference import run_graph
from padre_compiler.errors import PadreError, ShapeError
from padre_compiler.ir.graph import Graph, validate_dim, width_step
from padre_compiler.ir.ops import EvalContext
from padre_compiler.symbolic.degree import degrees

MAX_MONOMIALS = 50_000  # monomials of degree <= d in the N*D inputs
MAX_WEIGHT_SYMBOLS = 400
# terms of one node's value (all its entries) with symbolic weights, where no bound from the
# degrees holds: each product's work grows with its operands' terms (mamba_selective at
# N=2, D=1, one state: exp_order 4 peaks at 4,809 terms and expands in 2 s; 6 reaches 14,395
# at 1.7 s and takes 19 s more)
MAX_SYMBOLIC_TERMS = 10_000


def _exact(v: float) -> sp.Rational:
    return sp.Rational(Fraction(v))


def rational_weights(decls: dict, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Exact random weights k/4, 1 <= |k| <= 8: expansion stays exact and cheap, and no
    weight is 0 (a zero 1 x 1 weight at a small D would hide every term through it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, decl in decls.items():
        shape = decl.concrete(dim)
        size = int(np.prod(shape))
        ks = rng.integers(1, 9, size=size) * rng.choice([-1, 1], size=size)
        vals = [sp.Rational(int(k), 4) for k in ks]
        out[name] = np.array(vals, dtype=object).reshape(shape)
    return out


def weight_names(decls: dict, dim: int) -> dict[str, list[str]]:
    """branch1_channel_weight[i, j] -> 'branch1_channel_weight_i_j', per tensor, row-major."""
    count = sum(int(np.prod(d.concrete(dim))) for d in decls.values())
    if count > MAX_WEIGHT_SYMBOLS:
        raise PadreError(f"{count} weight entries at D={dim} is too many to keep symbolic "
                         f"(limit {MAX_WEIGHT_SYMBOLS}); use rational weights or smaller kernels")
    return {name: [f"{name}_" + "_".join(map(str, idx)) for idx in np.ndindex(*d.concrete(dim))]
            for name, d in decls.items()}


@dataclass(frozen=True)
class Expansion:
    matrix: sp.Matrix  # [N, D] of expanded polynomials (sympy expressions)
    x: list[sp.Symbol]
    weights: dict[str, np.ndarray]  # the weights used: symbols or exact numbers

    def degrees_in_x(self) -> set[int]:
        """Total degrees in x of the monomials that occur (coefficients may hold weights)."""
        found: set[int] = set()
        for entry in self.matrix:
            if entry != 0:
                found |= {sum(m) for m in sp.Poly(entry, *self.x).monoms()}
        return found


def expand_graph(g: Graph, tokens: int, channels: int, *, grid: tuple[int, int] | None = None,
                 weights: dict[str, np.ndarray] | None = None) -> Expansion:
    """The output polynomial of `g` at N = tokens, D = channels, expanded exactly.

    weights: exact (rational or sympy) parameter arrays; None makes every weight a symbol.
    """
    if g.layout == "grid2d" and (grid is None or grid[0] * grid[1] != tokens):
        raise PadreError(f"a grid2d spec needs grid=(H, W) with H * W = {tokens}")
    try:
        validate_dim(g, channels)
    except ShapeError as err:
        raise PadreError(f"expansion at D={channels}: {err}") from None
    phi_names = _phi_names(g, tokens, channels)
    top, phis = degrees(g)[g.output_id].top, sum(map(len, phi_names))
    # monomials of degree <= top in x, times those of degree <= (normalisers) in phi
    bound = comb(tokens * channels + top, top) * comb(phis + len(phi_names), len(phi_names))
    if bound > MAX_MONOMIALS:
        smallest = tokens == 1 and channels <= width_step(g)
        raise PadreError(f"symbolic expansion at N={tokens}, D={channels}, degree {top} in x"
                         + (f" and {len(phi_names)} in {phis} normaliser symbols" if phis else "")
                         + f" would exceed {MAX_MONOMIALS} monomials; "
                         + ("that is the spec's smallest size (D a multiple of its heads), so "
                            "its expansion is out of reach: inspect without --expand shows its "
                            "degrees and LaTeX" if smallest else "use fewer tokens or channels"))
    x_names = [f"x_{t}_{c}" for t in range(tokens) for c in range(channels)]
    symbolic = weights is None
    w_names = weight_names(g.decls, channels) if symbolic else {}
    w_flat = [name for names in w_names.values() for name in names]
    _, *gens = sp.ring(x_names + w_flat + [n for block in phi_names for n in block], sp.QQ)
    x = np.array(gens[:len(x_names)], dtype=object).reshape(1, tokens, channels)
    it = iter(gens[len(x_names):])
    if weights is None:
        weights = {name: np.array([next(it) for _ in names], dtype=object).reshape(
            g.decls[name].concrete(channels)) for name, names in w_names.items()}
    phis = [np.array([next(it) for _ in block], dtype=object) for block in phi_names]
    ctx = EvalContext(grid=grid, abs=None, sqrt=None, const=_exact,
                      opaque_norm=_opaque(phis, tokens))
    out = run_graph(g, x, weights, ctx, post=_bounded if symbolic else None)[0]
    matrix = sp.Matrix(tokens, channels, lambda t, c: out[t, c].as_expr()
                       if hasattr(out[t, c], "as_expr") else sp.sympify(out[t, c]))
    return Expansion(matrix, [sp.Symbol(n) for n in x_names], weights)


def _bounded(value: np.ndarray) -> np.ndarray:
    """`value` (a node's [B, N, w] polynomials) where its terms stay within
    MAX_SYMBOLIC_TERMS, else a PadreError before the nodes after it multiply them."""
    terms = sum(len(v) if isinstance(v, dict) else 1 for v in value.flat)  # PolyElement: dict
    if terms > MAX_SYMBOLIC_TERMS:
        raise PadreError(f"symbolic expansion with symbolic weights reached {terms} terms in one "
                         f"node (limit {MAX_SYMBOLIC_TERMS}); use rational weights (drop "
                         "--symbolic-weights), fewer tokens or channels, or lower orders")
    return value


def _phi_names(g: Graph, tokens: int, channels: int) -> list[list[str]]:
    """The opaque factors' symbol names, one block per normalize node (module docstring)."""
    blocks = []
    for k, n in enumerate((n for n in g.topo() if g.node(n).op == "normalize"), 1):
        node = g.node(n)
        if node.a["kind"] == "l1_tokens":
            blocks.append([f"phi{k}_{c}" for c in range(node.width.at(channels))])
        else:
            blocks.append([f"phi{k}_{t}_{h}" for t in range(tokens)
                           for h in range(node.a["heads"])])
    return blocks


def _opaque(phis: list[np.ndarray], tokens: int) -> Callable[[Any, dict[str, Any]], Any]:
    """opaque_norm for `run_graph`: the k-th normalize evaluated takes the k-th block of
    symbols, shaped to multiply its input (one per column, or per token and head)."""
    blocks = iter(phis)

    def phi(v: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
        block = next(blocks)
        w = v.shape[2]
        if attrs["kind"] == "l1_tokens":
            return block.reshape(1, 1, w)
        h = attrs["heads"]
        return np.repeat(block.reshape(1, tokens, h), w // h, axis=2)

    return phi
