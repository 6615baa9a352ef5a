"""Instance derivations: every proof passes, every proof can fail, committed reports are current;
the rectangular expand/contract (Mamba's x ⊗ B) and l1_rows hook agree across the three layers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler import dsl
from padre_compiler.backends.reference import run_graph
from padre_compiler.cli import main
from padre_compiler.compiler import optimise, pass_context
from padre_compiler.derive import MODELS, derivation
from padre_compiler.derive.castling_vit import _taylor
from padre_compiler.derive.mamba_lti import ssm_constants
from padre_compiler.ir.ops import EvalContext
from padre_compiler.paths import checkout
from padre_compiler.symbolic.expand import expand_graph, rational_weights
from tests.helpers import compiled_with, reference, rel_err

MISTAKES = [("hyena", "gate_order"), ("sima", "channels"), ("castling_vit", "constant_swap"),
            ("castling_vit", "cubic_coefficient"), ("mamba_lti", "zoh_b"),
            ("conv2former", "hadamard_branch"), ("mamba", "b_c_swap"),
            ("mamba", "shared_decay")]


@pytest.fixture(scope="module")
def reports() -> dict:
    return {name: derivation(name).prove(write=False) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_proof_passes(reports: dict, name: str) -> None:
    report = reports[name]
    assert report.passed, [c for c in report.checks if not c.passed]
    kinds = {c.kind for c in report.checks}
    assert kinds & {"symbolic identity", "exact at small N (rationals)"}
    assert any(k.startswith("numeric") for k in kinds)


@pytest.mark.parametrize("name", MODELS)
def test_committed_proof_is_current(reports: dict, name: str) -> None:
    path = checkout() / "proofs" / f"{name}.md"
    assert path.exists(), f"{path} missing: run `padre prove {name}`"
    assert path.read_text(encoding="utf-8") == reports[name].markdown, (
        f"{path} is stale: run `padre prove {name}` and commit the result")


@pytest.mark.parametrize(("name", "mistake"), MISTAKES)
def test_wrong_mapping_fails_the_proof(name: str, mistake: str) -> None:
    kw = {"orders": (4, 8)} if name == "mamba" else {}  # a shorter error table: faster
    report = derivation(name).prove(write=False, mistake=mistake, **kw)
    assert not report.passed
    failed = {c.kind for c in report.checks if not c.passed}
    # Mamba's init repeats A's row across channels: only the exact check's A tells them apart
    caught_by = "exact" if mistake == "shared_decay" else "numeric"
    assert any(k.startswith(caught_by) for k in failed), failed
    assert "**Overall verdict: FAIL**" in report.markdown


def _halved_a1(j: int) -> Fraction:
    return _taylor(j) / (2 if j == 1 else 1)


def _shifted_ssm(p: dict, F) -> tuple:
    """A off by 0.5 where it is read from Mamba's A_log (the symbolic run gives A itself)."""
    a, delta = ssm_constants(p, F)
    return (a - 0.5 if "A_log" in p else a), delta


# a wrong function or constant shared by the twin and the mapping (it cancels in every other
# check): (model, the attribute of its derive module or of common, the wrong value, the check)
SHARED = [
    ("castling_vit", "common.Float.inv_pi", 1.0 / 3.0, "angular kernel: shared functions"),
    ("castling_vit", "_taylor", _halved_a1, "arccos Taylor coefficients"),
    # the truncation error's reference: its errors still decrease over K (to the 0.01 offset)
    ("castling_vit", "angular_kernel", lambda c: 1.01 - np.arccos(c) / np.pi,
     "angular kernel: shared functions"),
    ("mamba_lti", "ssm_constants", _shifted_ssm, "discretisation: shared functions"),
    ("mamba_lti", "_Float.exp", staticmethod(lambda v: np.exp(2 * v)),
     "discretisation: shared functions"),
    ("conv2former", "common.Float.gelu",
     staticmethod(lambda v: 0.5 * v * (1 + np.tanh(0.7978845608 * (v + 0.044715 * v ** 3)))),
     "GELU: shared functions"),
    ("mamba", "softplus", lambda v: 1.05 * np.logaddexp(0.0, v), "scan: shared functions"),
    # flushed to 0 below -30: off by at most e^-30 = 9e-14 of exp's largest value on the range
    ("mamba", "_Exp.exp", staticmethod(lambda v: np.where(v < -30, 0.0, np.exp(v))),
     "scan: shared functions"),
]


@pytest.mark.parametrize(("name", "attribute", "wrong", "check"), SHARED,
                         ids=[f"{n}-{a}" for n, a, _, _ in SHARED])
def test_a_wrong_shared_function_fails_the_proof(monkeypatch, name: str, attribute: str,
                                                 wrong, check: str) -> None:
    """Each passed `padre prove` with its report unchanged before the shared-function checks
    (a proof-soundness review): the twin and the mapping read the same wrong value."""
    import importlib

    from padre_compiler.derive import common

    module = importlib.import_module(f"padre_compiler.derive.{name}")
    *path, leaf = attribute.split(".")
    owner = module
    for part in path:
        owner = common if part == "common" else getattr(owner, part)
    monkeypatch.setattr(owner, leaf, wrong)
    kw = {"orders": (4, 8)} if name == "mamba" else {}
    report = derivation(name).prove(write=False, **kw)
    assert {c.name for c in report.checks if not c.passed} == {check}


@pytest.mark.parametrize(("name", "twin"), [("sima", "sima"),
                                            ("castling_vit", "lin_angular_attention")])
def test_a_twin_that_mixes_the_batch_fails_the_proof(monkeypatch, name: str, twin: str) -> None:
    """A twin whose token reductions (l1 norms, global sums) also run over the batch passed
    while every numeric check ran at batch 1."""
    import importlib

    module = importlib.import_module(f"padre_compiler.derive.{name}")
    real = getattr(module, twin)

    def mixed(x, *args, **kw):  # the batch's items read as one sequence
        b, n, c = x.shape
        return real(x.reshape(1, b * n, c), *args, **kw).reshape(b, n, c)

    monkeypatch.setattr(module, twin, mixed)
    report = derivation(name).prove(write=False)
    failed = {c.name for c in report.checks if not c.passed}
    assert failed and all("numeric" in n for n in failed), failed


def test_cli_prove_exit_codes(tmp_path, capsys) -> None:
    assert main(["prove", "nonsense"]) == 2
    assert "unknown model 'nonsense'" in capsys.readouterr().err
    assert main(["prove", "hyna"]) == 2  # a typo gets the nearest name, as a spec name does
    assert "unknown model 'hyna'; did you mean 'hyena'?" in capsys.readouterr().err
    assert main(["prove"]) == 2
    assert main(["prove", "sima", "--no-write", "-q"]) == 0
    assert "sima: PASS" in capsys.readouterr().out


def test_cli_prove_exits_1_on_a_failed_check(monkeypatch, capsys) -> None:
    import padre_compiler.derive.sima as sima

    real = sima.prove
    monkeypatch.setattr(sima, "prove", lambda write, path: real(write=False, mistake="channels"))
    assert main(["prove", "sima", "-q"]) == 1
    assert "sima: FAIL" in capsys.readouterr().out


# the rectangular outer product x ⊗ B (expand/contract with `times`) -----------------------------
def _outer_spec(times: int, heads: int, tail: str):
    x = dsl.tokens("sequence")
    rep = dsl.expand(x, mode="replicate", heads=heads, times=times)  # slot (d, n): x[d]
    b = dsl.dense(x, "wb", out=times)
    tile = dsl.expand(b, mode="tile", times="dim")  # slot (d, n): B[n]
    z = dsl.prefix_sum(rep * tile) if tail == "prefix" else dsl.global_sum(rep * tile)
    c = dsl.expand(dsl.dense(x, "wc", out=times), mode="tile", times="dim")
    out = dsl.contract(z * c, keep="replicate", heads=heads, times=times)
    return dsl.spec("outer", layout="sequence", output=dsl.dense(out, "proj"))


@settings(max_examples=10, deadline=None)
@given(times=st.integers(1, 3), heads=st.sampled_from([1, 2]), e=st.integers(1, 2),
       tokens=st.integers(1, 4), tail=st.sampled_from(["prefix", "global"]))
def test_rectangular_outer_product_three_layers(times, heads, e, tokens, tail) -> None:
    dim = heads * e
    spec = _outer_spec(times, heads, tail)
    g = spec.graph()
    weights = rational_weights(g.decls, dim, seed=times)
    params = {k: np.array(v, dtype=float) for k, v in weights.items()}
    x = np.random.default_rng(tokens).integers(-3, 4, size=(1, tokens, dim)).astype(float)
    # float64 reference == a direct formula: proj(Σ_n C[t, n] S(x ⊗ B)[t, d, n])
    bm, cm = x[0] @ params["wb_weight"].T, x[0] @ params["wc_weight"].T
    outer = x[0][:, :, None] * bm[:, None, :]
    summed = np.cumsum(outer, 0) if tail == "prefix" else np.repeat(
        outer.sum(0, keepdims=True), tokens, 0)
    direct = (summed * cm[:, None, :]).sum(-1) @ params["proj_weight"].T
    ref = reference(g, x, params, None)[0]
    assert rel_err(ref, direct) < 1e-12
    # compiled == reference
    module = compiled_with(spec, dim, None, params)
    assert rel_err(module(torch.tensor(x)).detach().numpy()[0], ref) < 1e-10
    # exact expansion == reference
    expansion = expand_graph(g, tokens, dim, weights=weights)
    subs = dict(zip(expansion.x, (sp.Integer(int(v)) for v in x.flat), strict=True))
    assert rel_err(np.array(expansion.matrix.subs(subs), dtype=float), ref) < 1e-12
    # every pass preserves the polynomial exactly
    _, records = optimise(spec, pass_context(spec, dim, None, tokens))
    exact = EvalContext(abs=None, sqrt=None, const=Fraction)
    xq = x.astype(int).astype(object)
    pq = {k: np.vectorize(Fraction, otypes=[object])(v * 4) for k, v in params.items()}
    before = run_graph(records[0].graph, xq, pq, exact)
    for rec in records[1:]:
        assert (run_graph(rec.graph, xq, pq, exact) == before).all(), rec.name


def test_contract_inverts_expand_times() -> None:
    """contract(expand(x, m, T), keep=m, T) = T x for both modes (x ⊗ 1 summed over copies)."""
    x = np.arange(1.0, 13.0).reshape(1, 2, 6)
    for mode in ("replicate", "tile"):
        spec = dsl.spec("c", layout="sequence", output=dsl.contract(
            dsl.expand(dsl.tokens("sequence"), mode=mode, heads=3, times=4),
            keep=mode, heads=3, times=4))
        assert np.array_equal(reference(spec.graph(), x, {}, None), 4 * x)


@settings(max_examples=8, deadline=None)
@given(heads=st.sampled_from([1, 2, 3]), tokens=st.integers(1, 5), seed=st.integers(0, 99))
def test_l1_rows_hook(heads: int, tokens: int, seed: int) -> None:
    dim = 2 * heads
    spec = dsl.spec("n", layout="sequence", output=dsl.dense(dsl.normalize(
        dsl.dense(dsl.tokens("sequence"), "w"), kind="l1_rows", heads=heads, eps=1e-9), "p"))
    rng = np.random.default_rng(seed)
    params = {"w_weight": rng.standard_normal((dim, dim)), "p_weight": rng.standard_normal(
        (dim, dim))}
    x = rng.standard_normal((1, tokens, dim))
    h = (x @ params["w_weight"].T).reshape(1, tokens, heads, 2)
    direct = (h / (np.abs(h).sum(-1, keepdims=True) + 1e-9)).reshape(1, tokens, dim) \
        @ params["p_weight"].T
    ref = reference(spec.graph(), x, params, None)
    assert rel_err(ref, direct) < 1e-12
    module = compiled_with(spec, dim, None, params)
    assert rel_err(module(torch.tensor(x)).detach().numpy(), ref) < 1e-10


@pytest.mark.parametrize(("v", "noise", "want"), [
    (0.205, 2e-8, "2e-01"),  # the approximation error, its cancellation negligible
    (0.0489, 0.0124, "< 1e-01"),  # a fifth of it cancellation: its digit is the machine's
    (3.4e3, None, "< 1e+04"),  # a cancellation error itself (3e+03 on one machine, 4e+03 on
    (4.1e3, None, "< 1e+04"),  # another, same code): the same bound on both
    (1e-13, None, "< 1e-12"),
])
def test_cancellation_dominated_errors_print_as_bounds(v, noise, want) -> None:
    """Committed reports are compared with a fresh run (test_committed_proof_is_current), so
    a figure whose digits depend on the summation order of the machine's BLAS prints as a
    bound."""
    from padre_compiler.derive.common import fmt1

    assert fmt1(v, noise) == want


def test_the_conv2former_proof_sees_a_grid_read_with_h_and_w_swapped(monkeypatch) -> None:
    """Its grids are not square (2x3 symbolic, 12x16 numeric): on square ones a module that
    reads the grid transposed passed. compile()'s code certificate, on a grid wider than
    tall, now refuses that module before the proof's numeric check runs."""
    from padre_compiler.backends import pytorch
    from padre_compiler.errors import CertificateError

    old = "x.reshape(b, grid[0], grid[1], c)"
    assert old in pytorch.HELPERS["dwconv2d"]
    monkeypatch.setitem(pytorch.HELPERS, "dwconv2d", pytorch.HELPERS["dwconv2d"].replace(
        old, "x.reshape(b, grid[1], grid[0], c)"))
    with pytest.raises(CertificateError, match="code certificate: FAILED"):
        derivation("conv2former").prove(write=False)
