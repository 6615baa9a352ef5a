"""Each pass does the rewrite it names, and leaves the polynomial unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from padre_compiler import dsl
from padre_compiler.compiler import optimise, pass_context
from padre_compiler.ir.cost import graph_cost
from padre_compiler.ir.params import ParamExpr, evaluate_param
from padre_compiler.ir.width import Width
from padre_compiler.passes import PASSES, PIPELINE, PIPELINES
from padre_compiler.spec.loader import load_spec
from tests.helpers import random_case_inputs, reference, rel_err
from tests.passes_helpers import sima_like
from tests.strategies import Case


def _case(spec, dim: int, tokens: int, grid=None) -> Case:
    return Case(spec, {}, dim, grid, tokens)


def _check_preserved(case: Case, records) -> None:
    params, x = random_case_inputs(case)
    ref = reference(records[0].graph, x, params, case.grid)
    for rec in records[1:]:
        assert rel_err(reference(rec.graph, x, params, case.grid), ref) < 1e-10, rec.name


@pytest.mark.parametrize("heads", [1, 2])
def test_reassociation_removes_the_outer_products(heads: int) -> None:
    spec = sima_like(heads)
    dim, tokens = 8, 50
    g, records = optimise(spec, pass_context(spec, dim, None, tokens))
    ops = [g.node(n).op for n in g.topo()]
    assert "linear_attention" in ops and "expand" not in ops and "global_sum" not in ops
    before, after = graph_cost(records[0].graph, dim, tokens), graph_cost(g, dim, tokens)
    assert after.bytes < before.bytes / 2
    _check_preserved(_case(spec, dim, tokens), records)


def test_reassociation_needs_the_global_sum() -> None:
    """With a causal prefix sum instead of 1 1^T the identity q (k^T v) does not hold."""
    x = dsl.tokens("sequence")
    q = dsl.expand(x, mode="replicate")
    k = dsl.expand(dsl.dense(x, "k"), mode="replicate")
    v = dsl.expand(dsl.dense(x, "v"), mode="tile")
    spec = dsl.spec("causal", layout="sequence",
                    output=dsl.contract(dsl.prefix_sum(k * v) * q))
    g, _ = optimise(spec, pass_context(spec, 4, None, 8))
    assert "linear_attention" not in {g.node(n).op for n in g.topo()}


def test_merge_linear_folds_scales_and_cheap_dense_pairs() -> None:
    x = dsl.tokens("sequence")
    wide = dsl.dense(dsl.diagonal(x, "s"), "up", out=64, bias=True)
    y = dsl.diagonal(dsl.dense(wide, "down", out="dim", bias=True), "t")
    spec = dsl.spec("chain", layout="sequence", output=y * x)
    dim, tokens = 4, 100
    g, records = optimise(spec, pass_context(spec, dim, None, tokens))
    dense = [n for n in g.topo() if g.node(n).op in ("dense", "diagonal")]
    assert len(dense) == 1  # diag, dense 4->64, dense 64->4, diag -> one 4x4 dense
    assert graph_cost(g, dim, tokens).flops < graph_cost(records[0].graph, dim, tokens).flops
    _check_preserved(_case(spec, dim, tokens), records)


def test_merge_linear_keeps_square_dense_pairs_at_few_tokens() -> None:
    x = dsl.tokens("sequence")
    spec = dsl.spec("square", layout="sequence",
                    output=dsl.dense(dsl.dense(x, "a"), "b") * x)
    g, _ = optimise(spec, pass_context(spec, 64, None, 16))
    assert sum(g.node(n).op == "dense" for n in g.topo()) == 2


@pytest.mark.parametrize("tokens, folded", [(8, False), (200, True)])
def test_a_scale_folds_into_a_dense_map_only_where_it_saves_flops(tokens: int,
                                                                    folded: bool) -> None:
    """dense_W(diag_s(x)) -> dense_{W diag(s)}(x) saves N D multiplies a call and costs the
    D x D product W diag(s) a call: at D = 64 it pays from N > 64 only, and the graph cost
    counts the product."""
    x = dsl.tokens("sequence")
    spec = dsl.spec("scaled", layout="sequence",
                    output=dsl.dense(dsl.diagonal(x, "s"), "w") * x)
    g, records = optimise(spec, pass_context(spec, 64, None, tokens))
    ops = [g.node(n).op for n in g.topo()]
    assert ("diagonal" not in ops) is folded
    before, after = (graph_cost(r.graph, 64, tokens).flops for r in (records[0], records[-1]))
    assert after < before if folded else after == before
    merged = [e for n in g.topo() for _, e in g.node(n).params if e.fn != "leaf"]
    assert bool(merged) is folded
    if folded:  # the product is in the cost: N (2 D^2) + D^2, against N (2 D^2 + D)
        assert after == tokens * (2 * 64 * 64 + 64) + 64 * 64  # dense, ⊙ x; W diag(s)


def test_fuse_scaled_sum_counts_one_product_then_a_multiply_add_a_term() -> None:
    """s0 x0 + s1 x1 + s2 x2: 5 FLOPs an element, as the three diagonals and the add it
    replaces (3 + 2): the pass saves memory passes, not arithmetic."""
    spec = load_spec("padre3")
    _, records = optimise(spec, pass_context(spec, 16, (4, 4)))
    costs = {r.name: r.cost.flops for r in records}
    assert costs["fuse_scaled_sum"] == costs["eliminate_dead"]


def test_a_long_chain_of_rewrites_reaches_its_fixed_point() -> None:
    """merge_linear rewrites once a round: 120 scales in a row need 119 rounds (the bound
    grows with the graph, it was 100)."""
    x = y = dsl.tokens("sequence")
    for k in range(120):
        y = dsl.diagonal(y, f"s{k}")
    spec = dsl.spec("chain", layout="sequence", output=y * x)
    g, records = optimise(spec, pass_context(spec, 4, None, 16))
    assert [g.node(n).op for n in g.topo()].count("diagonal") == 1
    assert dict((r.name, r.rewrites) for r in records)["merge_linear"] == 119


def test_the_api_optimises_for_the_tokens_a_long_filter_allows() -> None:
    """A sequence spec whose long filter has 16 taps is optimised at N = 16 (the CLI's
    choice), not at 196 tokens it refuses: there 32 -> 32 -> 32 dense maps stay apart."""
    x = dsl.tokens("sequence")
    y = dsl.long_conv(dsl.dense(dsl.dense(x, "a"), "b"), "h", length=16)
    spec = dsl.spec("short_filter", layout="sequence", output=y * x)
    assert pass_context(spec, 32, None).tokens == 16
    g, _ = optimise(spec, pass_context(spec, 32, None))
    assert [g.node(n).op for n in g.topo()].count("dense") == 2


@pytest.mark.parametrize("global_sum", [False, True])
def test_a_contract_is_distributed_only_where_a_term_then_reduces(global_sum: bool) -> None:
    """contract(o_1 + o_2 + o_3) of outer products: distributed, three contracts at the wide
    width cost more than the sum's adds saved; distributed where each term then becomes a
    linear attention (a global sum of the k v products, times the expanded q)."""
    x = dsl.tokens("sequence")

    def term(k: int):
        outer = (dsl.expand(dsl.dense(x, f"k{k}"), mode="replicate")
                 * dsl.expand(dsl.dense(x, f"v{k}"), mode="tile"))
        if not global_sum:
            return outer
        return dsl.global_sum(outer) * dsl.expand(dsl.dense(x, f"q{k}"), mode="replicate")

    spec = dsl.spec("terms", layout="sequence",
                    output=dsl.dense(dsl.contract(dsl.add(*map(term, range(3)))), "p"))
    g, records = optimise(spec, pass_context(spec, 8, None, 50))
    rewrites = {r.name: r.rewrites for r in records}
    assert rewrites["distribute_contract"] == (1 if global_sum else 0)
    assert [g.node(n).op for n in g.topo()].count("linear_attention") == (3 if global_sum else 0)
    before, after = graph_cost(records[0].graph, 8, 50), graph_cost(g, 8, 50)
    assert after.bytes < before.bytes / 10 if global_sum else after.flops == before.flops
    _check_preserved(_case(spec, 8, 50), records)


def test_fuse_siblings_batches_padre3_branches() -> None:
    spec = load_spec("padre3")
    g, records = optimise(spec, pass_context(spec, 8, (3, 4)))
    ops = [g.node(n).op for n in g.topo()]
    assert ops.count("dense") == 4  # one 3D-wide branch map, two mixes, the projection
    assert ops.count("dwconv2d") == 3  # one 3D-wide branch conv, two mixes
    _check_preserved(_case(spec, 8, 12, (3, 4)), records)


def test_cse_and_dead_branches() -> None:
    x = dsl.tokens("sequence")
    a = dsl.global_sum(x)
    b = dsl.global_sum(x)  # the same tensor as a
    unused = dsl.dense(x, "unused")  # noqa: F841 -- not reachable from the output
    spec = dsl.spec("cse", layout="sequence", output=dsl.identity(a * b))
    g, records = optimise(spec, pass_context(spec, 3, None, 5))
    assert [g.node(n).op for n in g.topo()].count("global_sum") == 1
    assert "identity" not in [g.node(n).op for n in g.topo()]
    _check_preserved(_case(spec, 3, 5), records)


def test_pipeline_passes_are_registered() -> None:
    assert set(PIPELINE) <= set(PASSES)


def test_wrong_rewrite_is_caught_by_the_preservation_check() -> None:
    """A deliberately wrong pass (dropping a bias) must fail the check used above."""
    spec = load_spec("conv2former")
    case = _case(spec, 4, 6, (2, 3))
    g, records = optimise(spec, pass_context(spec, 4, (2, 3)))
    broken = g.copy()
    nid = next(n for n in broken.topo() if broken.node(n).op == "dense")
    broken.relabel(nid, params=tuple(p for p in broken.node(nid).params if p[0] != "bias"))
    params, x = random_case_inputs(case)
    assert rel_err(reference(broken, x, params, (2, 3)),
                   reference(records[0].graph, x, params, (2, 3))) > 1e-3
    assert np.isfinite(reference(broken, x, params, (2, 3))).all()


def test_sima_hooks_commute_with_expand_so_no_outer_product_is_materialised() -> None:
    """specs/sima.toml normalises the expanded K E and Q E; l1 over tokens is per column, so it
    commutes with the column copies and the re-association then removes every D^2/h tensor."""
    spec = load_spec("sima")
    dim, tokens = 64, 20
    g, records = optimise(spec, pass_context(spec, dim, None, tokens))
    ops = [g.node(n).op for n in g.topo()]
    assert "linear_attention" in ops and "expand" not in ops and "global_sum" not in ops
    assert max(g.node(n).width.at(dim) for n in g.topo()) == 3 * dim  # the fused q, k, v map
    assert [r.rewrites for r in records if r.name == "commute_column_normalizers"] == [2]
    _check_preserved(_case(spec, dim, tokens), records)


def test_row_normalizers_do_not_commute_with_expand() -> None:
    """The pass is restricted to column normalisers for a reason: an l2 norm over a head's
    channels of E k is sqrt(e) times the norm of k, so moving it changes the value."""
    x = dsl.tokens("sequence")
    for kind, moves in (("l1_tokens", True), ("l2_rows", False)):
        before = dsl.normalize(dsl.expand(dsl.dense(x, "k"), mode="replicate"), kind=kind)
        spec = dsl.spec(kind, layout="sequence", output=dsl.contract(before * dsl.expand(
            x, mode="tile")))
        _, records = optimise(spec, pass_context(spec, 4, None, 6),
                              ("commute_column_normalizers",))
        assert (records[1].rewrites == 1) is moves
        after = dsl.expand(dsl.normalize(dsl.dense(x, "k"), kind=kind), mode="replicate")
        moved = dsl.spec(kind, layout="sequence",
                         output=dsl.contract(after * dsl.expand(x, mode="tile")))
        case = _case(spec, 4, 6)
        params, xs = random_case_inputs(case)
        same = rel_err(reference(moved.graph(), xs, params, None),
                       reference(spec.graph(), xs, params, None)) < 1e-10
        assert same is moves


@pytest.mark.parametrize("variant", ["released", "exact_kernel"])
def test_castling_keeps_no_outer_product(variant: str) -> None:
    """Castling-ViT's weighted sum of the constant and linear kernel terms sits between the
    contract and the products: distribute_contract, the weighted reassociation and
    contract_expansions leave only D-wide tensors (the state weight scales the [e, e] state)."""
    spec = load_spec("castling_vit", params={"variant": variant})
    dim, tokens = 32, 12
    g, records = optimise(spec, pass_context(spec, dim, None, tokens), PIPELINES["torch"])
    ops = [g.node(n).op for n in g.topo()]
    assert "linear_attention" in ops and "expand" not in ops and "contract" not in ops
    assert max(g.node(n).width.at(dim) for n in g.topo()) == dim
    _check_preserved(_case(spec, dim, tokens), records)


def test_contract_expansions_needs_matching_layouts() -> None:
    """contract(keep=tile) sums the copies of a tiled expand; over a replicated one it sums
    the other index, so the rewrite must not fire, and the two sums differ."""
    x = dsl.tokens("sequence")
    for mode, fires in (("tile", True), ("replicate", False)):
        e = dsl.diagonal(dsl.expand(x, mode=mode, heads=2), "w")
        spec = dsl.spec(mode, layout="sequence", output=dsl.contract(e, keep="tile", heads=2))
        _, records = optimise(spec, pass_context(spec, 4, None, 5), ("contract_expansions",))
        assert (records[1].rewrites == 1) is fires
        _check_preserved(_case(spec, 4, 5), records)
    w = np.arange(8.0)
    tile = evaluate_param(ParamExpr("sum_copies", (ParamExpr.leaf("w"), 2, None, "tile",
                                                   Width.dim())), {"w": w}.__getitem__, np)
    rep = evaluate_param(ParamExpr("sum_copies", (ParamExpr.leaf("w"), 2, None, "replicate",
                                                  Width.dim())), {"w": w}.__getitem__, np)
    assert tile.tolist() == [2, 4, 10, 12] and rep.tolist() == [1, 5, 9, 13]
