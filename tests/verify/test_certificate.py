"""Certificates: they pass on correct compiles, and they fail on wrong graphs and wrong code."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import padre_compiler as pc
from padre_compiler import dsl
from padre_compiler.compiler import generate
from padre_compiler.ir.params import ParamExpr
from padre_compiler.verify.certificate import certify_graphs, check_code
from padre_compiler.verify.field import GF, P
from tests.passes_helpers import sima_like
from tests.strategies import specs


def test_field_arithmetic_is_exact() -> None:
    rng = np.random.default_rng(0)
    a = GF(rng.integers(0, P, (3, 9000)))
    b = GF(rng.integers(0, P, (9000, 2)))
    exact = (a.view(np.ndarray).astype(object) @ b.view(np.ndarray).astype(object)) % P
    assert np.array_equal((a @ b).view(np.ndarray), exact.astype(np.int64))
    assert int(GF(3) * (1 / GF(3))) == 1
    assert int(GF(2) - GF(5)) == P - 3


@pytest.mark.parametrize("name", ["padre3", "conv2former"])
def test_compile_carries_a_passing_certificate(name: str) -> None:
    module = pc.compile(name, dim=16, grid=(3, 4))
    cert = module.certificate
    assert cert.passed and cert.code is not None and cert.code.passed
    assert cert.bound < 1e-12
    assert "bit for bit" in cert.code.detail


def test_the_printed_bound_survives_float_underflow() -> None:
    """(15/p)^200 is 0.0 as a float; the report prints it from its logarithm."""
    from dataclasses import replace

    cert = pc.compile("padre3", dim=16, grid=(3, 4)).certificate
    deep = replace(cert, trials=200)
    assert cert.degree == 15 and deep.bound == 0.0 and deep.bound_text == "1.2e-1270"
    assert replace(cert, trials=2).bound_text == f"{(cert.degree / cert.prime) ** 2:.1e}"


@settings(max_examples=15)
@given(specs())
def test_random_compiles_are_certified(case) -> None:
    result = generate(case.spec, dim=max(case.dim, 2), grid=case.grid, tokens=case.tokens)
    assert result.certificate.passed, str(result.certificate)


def _wrong(g, mutate):
    broken = g.copy()
    mutate(broken)
    return broken


@pytest.mark.parametrize("wrong", ["drop_bias", "swap_scales", "transpose_weight"])
def test_graph_certificate_rejects_wrong_rewrites(wrong: str) -> None:
    spec = pc.load_spec("padre3")
    result = generate(spec, dim=8, grid=(3, 4))
    g = result.graph.copy()
    if wrong == "drop_bias":
        nid = g.find("dense")[-1]
        g.relabel(nid, params=tuple(p for p in g.node(nid).params if p[0] != "bias"))
    elif wrong == "swap_scales":
        nid = g.find("scaled_sum")[0]
        params = dict(g.node(nid).params)
        params["scale0"], params["scale1"] = params["scale1"], params["scale0"]
        g.relabel(nid, params=tuple(params.items()))
    else:
        nid = g.find("dense")[-1]
        params = dict(g.node(nid).params)
        params["weight"] = ParamExpr("matmul", (params["weight"], ParamExpr.leaf("mix1_channel_"
                                                                                 "weight")))
        g.relabel(nid, params=tuple(params.items()))
    cert = certify_graphs("padre3", result.records[0].graph, [("wrong", g)], dim=8, tokens=12,
                          grid=(3, 4), trials=2)
    assert not cert.passed and cert.failed_after == ("wrong",)


def test_normalisers_are_certified_as_uninterpreted_functions() -> None:
    """Applying a normaliser to a different (but same-shaped) argument is caught, moving it
    past a linear map it does not commute with is caught, and an equal rewrite passes."""
    x = dsl.tokens("sequence")
    spec = dsl.spec("n", layout="sequence",
                    output=dsl.dense(dsl.normalize(dsl.dense(x, "a"), kind="l1_tokens") * x, "p"))
    result = generate(spec, dim=4, tokens=6)
    assert result.certificate.passed
    assert "uninterpreted" in result.certificate.normalisers
    g = result.graph.copy()
    norm = g.find("normalize")[0]
    g.g.remove_edges_from(list(g.g.in_edges(norm, keys=True)))
    g.g.add_edge(g.input_id, norm, port=0)  # normalize(x) instead of normalize(x A)
    cert = certify_graphs("n", result.records[0].graph, [("moved", g)], dim=4, tokens=6,
                          grid=None)
    assert not cert.passed


def test_reassociation_is_certified_at_realistic_size() -> None:
    spec = sima_like(heads=4)
    result = generate(spec, dim=64, tokens=256)
    cert = certify_graphs("sima_like", result.records[0].graph, [("final", result.graph)],
                          dim=64, tokens=256, grid=None, trials=3)
    assert cert.passed and cert.degree == 7  # x^3 times the q, k, v and proj weights


def test_code_certificate_rejects_wrong_code() -> None:
    result = generate("conv2former", dim=4, grid=(3, 4))
    wrong = result.source.replace("z2 = y1 * w2", "z2 = y1 * y1")
    assert wrong != result.source
    from padre_compiler.compiler import load_source

    cls = getattr(load_source(wrong, "conv2former_wrong"), result.class_name)
    check = check_code(cls(4, (3, 4)), result.records[0].graph, dim=4, tokens=12, grid=(3, 4))
    assert check.applicable and not check.passed


def test_numeric_code_certificate_allows_the_references_rounding_and_no_more() -> None:
    """mamba's degree-403 surrogate polynomial cancels past 1e-10 in float64, so its code check
    allows four times the error of the spec lowered op by op. Its scan negated fails it, as do
    its skip term D ⊙ x negated (buried below float64's resolution at the default weights, not
    at the second probe's small input) and one coefficient of a decay polynomial doubled (an
    allowance of 16x the reference's own rounding error let it pass)."""
    from padre_compiler.compiler import load_source

    result = generate("mamba", dim=8)
    graph = result.records[0].graph
    good = getattr(load_source(result.source, "mamba"), result.class_name)
    check = check_code(good(8), graph, dim=8, tokens=25, grid=None)
    assert check.passed and "4x the error of the spec lowered op by op" in check.detail
    for name, old, new in (("scan", "add = contract + skip", "add = skip - contract"),
                           ("skip", "skip = x * self.skip_scale", "skip = -x * self.skip_scale"),
                           ("coefficient", "3.775590807852769", "7.55")):
        wrong = result.source.replace(old, new)
        assert wrong != result.source
        bad = getattr(load_source(wrong, f"mamba_wrong_{name}"), result.class_name)
        check = check_code(bad(8), graph, dim=8, tokens=25, grid=None)
        assert check.applicable and not check.passed and " > " in check.detail, name


def test_the_code_certificate_reaches_every_tap_of_the_kernel(monkeypatch) -> None:
    """compile()'s small grid is wide enough that each of the 11 x 11 taps joins two tokens:
    a module that drops the kernel's outer ring (offsets +-5) fails (a 4 x 5 grid passed it)."""
    from padre_compiler.backends import pytorch

    old = "    y = F.conv2d(x4, weight.unsqueeze(1)"
    ring = ("    weight = weight.clone()\n    weight[:, [0, -1], :] = 0\n"
            "    weight[:, :, [0, -1]] = 0\n")
    assert old in pytorch.HELPERS["dwconv2d"]
    monkeypatch.setitem(pytorch.HELPERS, "dwconv2d",
                        pytorch.HELPERS["dwconv2d"].replace(old, ring + old))
    with pytest.raises(pc.CertificateError, match="failed its certificate") as caught:
        pc.compile("padre3", dim=16, grid=(14, 14))
    code = caught.value.certificate.code  # compile() hands no failed module out as correct
    assert code.applicable and not code.passed and "N=42" in code.detail  # a 6 x 7 grid


def test_the_code_certificate_sees_a_transposed_grid(monkeypatch) -> None:
    """The helper reading the [N, C] tokens as a W x H grid: the small grid is not square
    unless the compiled one is (a 6 x 6 one, every 11 x 11 kernel's, read the same transposed
    and passed it; so did 20 x 6 after a first fix)."""
    from padre_compiler.backends import pytorch

    old = "x.reshape(b, grid[0], grid[1], c)"
    assert old in pytorch.HELPERS["dwconv2d"]
    monkeypatch.setitem(pytorch.HELPERS, "dwconv2d", pytorch.HELPERS["dwconv2d"].replace(
        old, "x.reshape(b, grid[1], grid[0], c)"))
    for grid in ((14, 12), (20, 6)):  # wider than tall; taller where the grid is narrow
        with pytest.raises(pc.CertificateError, match="failed its certificate"):
            pc.compile("padre3", dim=16, grid=grid)


def test_the_bound_takes_the_larger_degree_of_the_two_graphs() -> None:
    """A wrong stage may have a higher degree than the spec: the difference's degree, which
    Schwartz-Zippel needs, is bounded by the larger."""
    from padre_compiler.verify.degree import total_degree

    x = dsl.tokens("sequence")
    spec = dsl.spec("lin", layout="sequence", output=dsl.dense(x, "p"))
    wrong = dsl.spec("lin", layout="sequence", output=dsl.dense(x * x, "p"))
    assert (total_degree(spec.graph()), total_degree(wrong.graph())) == (2, 3)
    cert = certify_graphs("lin", spec.graph(), [("wrong", wrong.graph())], dim=3, tokens=4,
                          grid=None)
    assert not cert.passed and cert.failed_after == ("wrong",) and cert.degree == 3
