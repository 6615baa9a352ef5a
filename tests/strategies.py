"""Hypothesis strategies: random valid PADRe specs in their TOML (dict) form, and sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from padre_compiler.spec.loader import _build
from padre_compiler.spec.model import Spec


@dataclass(frozen=True)
class Case:
    spec: Spec
    data: dict[str, Any]
    dim: int
    grid: tuple[int, int] | None
    tokens: int


def _token_ops(layout: str) -> st.SearchStrategy[dict[str, Any]]:
    common = [st.just({"op": "identity"}), st.just({"op": "global_sum"})]
    if layout == "grid2d":
        kernel = st.one_of(st.sampled_from([1, 3, 5]),
                           st.tuples(st.sampled_from([1, 3]), st.sampled_from([1, 3, 5]))
                           .map(list))
        conv = st.builds(lambda k, b: {"op": "dwconv2d", "kernel": k, "bias": b}, kernel,
                         st.booleans())
        return st.one_of(*common, conv)
    conv = st.builds(lambda k, c, b: {"op": "dwconv1d", "kernel": k if not c else k + 1,
                                      "causal": c, "bias": b},
                     st.sampled_from([1, 3, 5]), st.booleans(), st.booleans())
    long = st.builds(lambda s: {"op": "long_conv", "length": 8, "skip": s}, st.booleans())
    return st.one_of(*common, conv, st.just({"op": "prefix_sum"}), long)


_channel = st.one_of(
    st.just({"op": "identity"}),
    st.just({"op": "diagonal"}),
    st.builds(lambda b: {"op": "dense", "bias": b}, st.booleans()),
)


@st.composite
def specs(draw: st.DrawFn, max_degree: int = 4, allow_norm: bool = True) -> Case:
    layout = draw(st.sampled_from(["sequence", "grid2d"]))
    degree = draw(st.integers(1, max_degree))
    outer = degree >= 3 and draw(st.integers(0, 3)) == 0  # SimA-style outer-product features
    heads = draw(st.sampled_from([1, 2])) if outer else 1
    # the tiled factor (V) is Y_2 (SimA) or Y_1 (then Z_1 = V F is Castling-style constant term)
    tiled = (0 if draw(st.booleans()) else 1) if outer else -1
    branches, mixes = [], []
    for i in range(degree):
        channel: Any = draw(_channel)
        if outer:
            mode = "tile" if i == tiled else "replicate"
            channel = [{"op": "dense"}, {"op": "expand", "mode": mode, "heads": heads}]
        branch = {"channel": channel, "token": {"op": "identity"} if outer
                  else draw(_token_ops(layout))}
        if not outer and draw(st.integers(0, 9)) == 9:
            branch["activation"] = {"fn": "silu", "order": 3, "range": [-3, 3]}
        branches.append(branch)
    for i in range(degree - 1):
        if outer:  # SimA: Z_2 = Y_1 ⊙ Y_2, Z_3 = (1 1^T Z_2) ⊙ Y_3
            mixes.append({"channel": {"op": "identity"},
                          "token": {"op": "global_sum" if i == 1 else "identity"}})
        else:
            mixes.append({"channel": draw(_channel), "token": draw(_token_ops(layout))})
    if outer:  # weighted sums of terms exercise distribute_contract, the weighted
        # re-association and contract_expansions
        terms = draw(st.sampled_from([[3], [1, 3], [2, 3], [1, 2, 3]])) if degree == 3 \
            else [3, degree]
        output = {"terms": terms, "weights": draw(st.sampled_from(["none", "per_channel"])),
                  "projection": [{"op": "contract", "heads": heads}, {"op": "dense"}]}
    else:
        terms = draw(st.lists(st.integers(1, degree), min_size=1, max_size=degree, unique=True))
        output = {"terms": terms, "weights": draw(st.sampled_from(["per_channel", "none"])),
                  "bias": draw(st.booleans()),
                  "projection": draw(_channel)}
    data: dict[str, Any] = {"layout": layout, "degree": degree, "branch": branches,
                            "mix": mixes, "output": output}
    if allow_norm and not outer and draw(st.integers(0, 9)) == 9:
        data["normalize"] = [{"at": "Y1", "kind": "l1_tokens"}]
    spec = _build(data, "<hypothesis>", f"random{degree}")
    dim = draw(st.sampled_from([2, 4]) if outer else st.integers(1, 5))
    if layout == "grid2d":
        grid = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
        tokens = grid[0] * grid[1]
    else:
        grid, tokens = None, draw(st.integers(1, 8))
    return Case(spec, data, dim, grid, tokens)
