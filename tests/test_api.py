"""The Python API contract: load_spec and compile(spec, dim=, backend=, grid=)."""

from __future__ import annotations

import copy
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import padre_compiler as pc
from padre_compiler import PadreError, dsl
from padre_compiler.backends.reference import random_params
from tests.helpers import compiled_with, reference, rel_err


@pytest.mark.parametrize("how", ["name", "path", "spec"])
def test_compile_accepts_name_path_or_spec(how: str) -> None:
    spec = {"name": "padre3", "path": "specs/padre3.toml", "spec": pc.load_spec("padre3")}[how]
    module = pc.compile(spec, dim=24, grid=(4, 6))
    x = torch.randn(3, 24, 24, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in module.parameters())
    assert "class Padre3" in module.source


def test_grid_is_required_for_2d_and_refused_for_sequences() -> None:
    with pytest.raises(PadreError, match="pass grid"):
        pc.compile("padre3", dim=8)
    x = dsl.tokens("sequence")
    spec = dsl.spec("seq", layout="sequence", output=dsl.dense(dsl.prefix_sum(x), "p"))
    with pytest.raises(PadreError, match="takes no grid"):
        pc.compile(spec, dim=8, grid=(2, 2))


def test_wrong_token_count_is_refused() -> None:
    module = pc.compile("conv2former", dim=8, grid=(3, 4))
    with pytest.raises(ValueError, match="13 tokens do not fill the 3 x 4 grid"):
        module(torch.randn(1, 13, 8))


def test_dsl_spec_compiles_and_matches_reference() -> None:
    x = dsl.tokens("sequence")
    gate = dsl.dwconv1d(dsl.dense(x, "b1", bias=True), "a1", kernel=4, causal=True)
    value = dsl.long_conv(dsl.dense(x, "b2"), "h", length=32, skip=True)
    spec = dsl.spec("gated", layout="sequence", output=dsl.dense(gate * value + x, "proj"))
    assert spec.degree == 2
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(d.concrete(6)) for k, d in spec.param_decls().items()}
    xs = rng.standard_normal((2, 11, 6))
    out = compiled_with(spec, 6, None, params)(torch.tensor(xs)).detach().numpy()
    assert rel_err(out, reference(spec.graph(), xs, params, None)) < 1e-10


def test_dsl_rejects_unnamed_parameters_and_shared_names() -> None:
    x = dsl.tokens()
    with pytest.raises(pc.SpecError, match="needs a name"):
        dsl.dense(x)
    a, b = dsl.dense(x, "w"), dsl.diagonal(x, "w")
    with pytest.raises(pc.SpecError, match="share this parameter name"):
        dsl.spec("dup", layout="sequence", output=a * b)


def test_dsl_init_draws_a_parameter_on_its_interval() -> None:
    x = dsl.tokens("sequence")
    y = dsl.diagonal(dsl.dense(x, "w", bias=True, init={"bias": (-3, -2)}), "s",
                     init={"scale": (0.5, 0.75)})
    z = dsl.diagonal(x, "c", init={"scale": (2, 2)})  # lo = hi: a constant
    spec = dsl.spec("inits", layout="sequence", output=y * z)
    decls = spec.param_decls()
    assert decls["w_bias"].init_range == (-3.0, -2.0)
    assert decls["w_weight"].init_range is None  # the op's default for the roles not named
    module = pc.compile(spec, dim=64)
    for name, (lo, hi) in (("w_bias", (-3, -2)), ("s_scale", (0.5, 0.75))):
        t = getattr(module, name)
        assert lo <= t.min() and t.max() <= hi and t.std() > 0.05 * (hi - lo)
    assert (module.c_scale == 2).all()
    params = random_params(decls, 64, seed=1)  # checks draw the op's default (zeros + noise)
    assert params["w_bias"].max() > 0


@pytest.mark.parametrize(("init", "error"), [
    ({"weight": (0, 1)}, r"(?s)s\.init: no parameter 'weight'.*its parameters: scale"),
    ({"scale": (2, 1)}, r"s\.init\.scale: \(2, 1\) is not an interval"),
    ({"scale": (0, float("inf"))}, "is not an interval"),
    ({"scale": (float("nan"), 1)}, "is not an interval"),
    ({"scale": (-3e38, 3e38)}, "is not an interval"),  # hi - lo past float32's range
    ({"scale": 1.0}, "is not an interval"),
    ({"scale": "12"}, "is not an interval"),
    ({"scale": (False, True)}, "is not an interval"),
    ({"scale": {0: 5, 1: 9}}, "is not an interval"),
    ([("scale", (0, 1))], "is not a mapping"),
])
def test_dsl_init_refuses_what_is_not_an_interval_of_a_parameter(init: dict, error: str) -> None:
    with pytest.raises(pc.SpecError, match=error):
        dsl.diagonal(dsl.tokens(), "s", init=init, field="s")


def test_mamba_is_initialised_inside_its_surrogates_ranges() -> None:
    """At its default initialisation the bundled Mamba spec stays on the ranges its
    surrogates were fitted on: in float64 its module is its polynomial (it overflowed to NaN
    when Δ's bias started at 0 and the decay at +1)."""
    torch.manual_seed(0)
    module = pc.compile("mamba", dim=16, dtype=torch.float64)
    spec = pc.load_spec("mamba")
    xs = torch.randn(2, 196, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    with torch.no_grad():
        out = module(xs).numpy()
    assert np.isfinite(out).all() and np.abs(out).max() < 1e3
    assert rel_err(out, reference(spec.graph(), xs.numpy(), params, None)) < 5e-2


@pytest.mark.parametrize(("mode", "times"), [("replicate", 4), ("tile", None)])
def test_scales_on_copies_a_contract_sums_start_at_the_identity(mode: str,
                                                                 times: int | None) -> None:
    """expand -> diagonal -> contract of the same copies is x at init (1 / copies per slot,
    ParamDecl.copies), not copies * x; a diagonal with another reader keeps its ones."""
    x = dsl.tokens("sequence")
    copies = dsl.expand(x, mode=mode, heads=2, times=times)
    chain = dsl.contract(dsl.diagonal(copies, "w"), keep=mode, heads=2, times=times)
    module = pc.compile(dsl.spec("chain", layout="sequence", output=chain), dim=8)
    xs = torch.randn(2, 5, 8)
    torch.testing.assert_close(module(xs), xs)
    terms = [dsl.diagonal(dsl.expand(x, mode=mode, heads=2, times=times), n) for n in "abc"]
    three = dsl.contract(terms[0] + terms[1] + terms[2], keep=mode, heads=2, times=times)
    module = pc.compile(dsl.spec("three", layout="sequence", output=three), dim=8)
    torch.testing.assert_close(module(xs), 3 * xs)  # add(add(a, b), c): each chain x
    both = dsl.diagonal(dsl.expand(x, mode=mode, heads=2, times=times), "v")
    shared = dsl.contract(both, keep=mode, heads=2, times=times) + dsl.contract(
        both * both, keep=mode, heads=2, times=times)
    spec = dsl.spec("shared", layout="sequence", output=shared)
    assert spec.param_decls()["v_scale"].copies is None


def test_random_params_can_draw_the_copies_scales_around_their_init() -> None:
    """copies_at_init moves only the scales on copies, from around 1 to around 1 / copies
    (the same noise: one seed), as benchmarks/castling_bf16_state.py draws them."""
    decls = pc.load_spec("castling_vit").graph().decls
    ones, at_init = (random_params(decls, 16, seed=3, copies_at_init=c) for c in (False, True))
    moved = {name for name in decls if not np.array_equal(ones[name], at_init[name])}
    assert moved == {name for name, d in decls.items() if d.copies is not None} != set()
    for name in moved:
        np.testing.assert_allclose(ones[name] - at_init[name],
                                   1 - 1 / decls[name].copies.at(16))


def test_castling_vit_starts_at_its_own_formula() -> None:
    """At init the module computes l2rows(V / 2 + Q̂ (K̂ᵀ V) / π) + DWConv9(V), then proj:
    the V term had started at e V (its e copies summed at ones) and the attention at 1, not
    1/π, so the normaliser left the attention term 1/20 of its weight at D = 384."""
    torch.manual_seed(0)
    module = pc.compile("castling_vit", dim=32, dtype=torch.float64)
    x = torch.randn(2, 11, 32, dtype=torch.float64)

    def heads(t: torch.Tensor) -> torch.Tensor:  # [B, N, 32] -> [B, N, 8 heads, 4]
        return t.reshape(2, 11, 8, 4)

    def l2rows(t: torch.Tensor) -> torch.Tensor:
        return heads(t) / heads(t).norm(dim=-1, keepdim=True)

    q, k = (l2rows(x @ getattr(module, f"w{n}_weight").T) for n in "qk")
    v = x @ module.wv_weight.T
    attention = torch.einsum("bthc,bhcm->bthm", q, torch.einsum("bshc,bshm->bhcm", k, heads(v)))
    o = l2rows((heads(v) / 2 + attention / math.pi).reshape(2, 11, 32)).reshape(2, 11, 32)
    conv = torch.nn.functional.conv1d(torch.nn.functional.pad(v.transpose(1, 2), (4, 4)),
                                      module.dconv_weight[:, None, :], groups=32)
    want = (o + conv.transpose(1, 2)) @ module.proj_weight.T + module.proj_bias
    torch.testing.assert_close(module(x), want)


def test_mamba_lti_starts_with_mambas_unit_skip() -> None:
    """Its skip D ⊙ x is the sum over 16 states of w_1 ⊙ x: w_1 starts at 1/16 (D = 1, as
    Mamba's), not 1 (a skip of 16 that grew the residual stream)."""
    module = pc.compile("mamba_lti", dim=8)
    assert torch.equal(module.output_w1_scale, torch.full_like(module.output_w1_scale, 1 / 16))


def test_mamba_with_one_state_starts_at_a_constant_decay() -> None:
    """One state: A's range [-N_s, -1] is the point -1, an init range with lo = hi."""
    module = pc.compile(pc.load_spec("mamba", params={"states": 1}), dim=8, dtype=torch.float64)
    assert module.decay_scale.unique().numel() == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_backward() -> None:
    module = pc.compile("padre3", dim=32, grid=(7, 7)).cuda()
    x = torch.randn(2, 49, 32, device="cuda", requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["sima", "castling_vit", "hyena", "mamba_lti"])
def test_cuda_triton_kernels_in_bf16_match_float64(name: str) -> None:
    """The kernels' bf16 paths, which Triton's CPU interpreter cannot run (the attentions'
    bf16 products on tensor cores; Castling-ViT's row normalisations in the kernels, its
    output epilogue and their backward launches; the long convolution's kernels around
    cuFFT): the output and the gradients of the input and every parameter of the bf16 Triton
    module on CUDA, against the same module in float64 on the CPU (its naive twins), on the
    same weights; 1,500 tokens span two state chunks, 1,000 stay within the 1,024-tap long
    filters."""
    module = pc.compile(name, dim=64, backend="triton").cuda().bfloat16()
    reference = copy.deepcopy(module).cpu().double()
    tokens = 1000 if name in ("hyena", "mamba_lti") else 1500
    x = torch.randn(2, tokens, 64, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn_like(x)

    def run(m, x, dy):
        x = x.detach().requires_grad_()
        out = m(x)
        return [out.detach(), *torch.autograd.grad((out * dy).sum(), [x, *m.parameters()])]

    for got, want in zip(run(module, x, dy), run(reference, x.cpu().double(), dy.cpu().double()),
                         strict=True):
        error = (got.cpu().double() - want).abs().max() / want.abs().max().clamp_min(1e-12)
        assert error < 5e-2, (name, tuple(want.shape), float(error))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_triton_gradients_are_bitwise_reproducible_under_deterministic_algorithms(
        monkeypatch) -> None:
    """torch.use_deterministic_algorithms(True): the Triton backward (tensor-core Toeplitz
    form at bf16) sums into rows of partial sums, not with atomics, so two backward passes
    give bitwise equal gradients, within rounding of the default (atomic) pass."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    module = pc.compile("padre3", dim=64, grid=(14, 14), backend="triton").cuda().bfloat16()
    x = torch.randn(4, 196, 64, device="cuda", dtype=torch.bfloat16)

    def grads() -> list[torch.Tensor]:
        return [g.float() for g in torch.autograd.grad(module(x).square().sum(),
                                                       list(module.parameters()))]

    default = grads()
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        first, second = grads(), grads()
    finally:
        torch.use_deterministic_algorithms(before)
    for a, b, ref in zip(first, second, default, strict=True):
        assert torch.equal(a, b)
        assert torch.allclose(a, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def test_dsl_names_operators_and_sizes_get_clear_errors() -> None:
    x = dsl.tokens("sequence")
    a = dsl.dense(x, "a")
    for wrong, words in ((lambda: a * 2, "dsl.diagonal"), (lambda: 1.0 + a, "dsl.bias"),
                         (lambda: a - a, "no '-'"), (lambda: a @ a, "no '@'")):
        with pytest.raises(TypeError, match=words):
            wrong()
    for name in ("b 1", "1a", "a/b", "", "_x", "__a"):  # __a: self.__a_weight is mangled
        with pytest.raises(pc.SpecError, match="not a name generated code can use"):
            dsl.dense(x, name)
        with pytest.raises(pc.SpecError, match="not a name generated code can use"):
            dsl.spec(name, layout="sequence", output=dsl.dense(a, "p"))
    for name in ("none", "true", "false"):  # class None, True, False
        with pytest.raises(pc.SpecError, match="a Python keyword"):
            dsl.spec(name, layout="sequence", output=dsl.dense(a, "p"))
    assert sum([a, dsl.dense(x, "b")]).op == "add"
    for op in ("input", "output", "hadamard", "poly", "linear_attention"):  # not user maps
        with pytest.raises(pc.SpecError, match="not an op apply"):
            dsl.apply(op, x)
    with pytest.raises(pc.SpecError, match="unknown layout 'grid'"):
        dsl.tokens("grid")
    # each said what it is, not "needs a any layout" and "sum of widths " with nothing after
    with pytest.raises(pc.SpecError, match="mixes layouts: its inputs are grid2d and sequence"):
        a * dsl.tokens("grid2d")
    with pytest.raises(pc.SpecError, match="a sum of no terms"):
        dsl.add()
    with pytest.raises(pc.SpecError, match="give a product's or a sum's operands one width"):
        a * dsl.dense(x, "c", out=2)
    # a bad argument is a ValueError to Python callers and a PadreError to the CLI
    assert issubclass(pc.ArgumentError, ValueError) and issubclass(pc.ArgumentError, PadreError)
    with pytest.raises(pc.ArgumentError, match=r"grid=\(0, 3\): give \(H, W\)"):
        pc.compile("padre3", dim=8, grid=(0, 3))
    # generate() checks its sizes as compile() does (an empty grid made a vacuous certificate)
    for kw, words in ((dict(grid=(0, 2)), "grid=(0, 2)"), (dict(grid=(2.5, 2)), "grid=(2.5"),
                      (dict(dim=True), "dim=True"), (dict(dim=4.0), "dim=4.0"),
                      (dict(tokens=0), "tokens=0")):
        with pytest.raises(pc.ArgumentError, match=re.escape(words)):
            pc.generate("padre3", **{"dim": 4, **kw})
    with pytest.raises(pc.ArgumentError, match="takes no grid"):
        pc.generate("hyena", dim=4, grid=(2, 2))
    assert pc.compile("hyena", dim=4, dtype="float64").out_proj_weight.dtype == torch.float64
    for dtype in ("float66", torch.int32):
        with pytest.raises(pc.ArgumentError, match="give a floating dtype"):
            pc.compile("hyena", dim=4, dtype=dtype)


def test_compile_warns_where_float32_cannot_compute_the_spec() -> None:
    """mamba's expanded scan cancels below float32's precision at its initial weights (off by
    ~1e7 relative, evaluated op by op): compile() says so and names float64. At exp_order 32
    it cancels below float64's too (off by ~1e2 against long double): compile() says no dtype
    computes it. padre3, hyena and sima do not warn."""
    from padre_compiler.errors import PrecisionWarning

    with pytest.warns(PrecisionWarning, match=r"mamba in float32 is off by \d\.\de\+0[5-9]"):
        pc.compile("mamba", dim=8)
    with pytest.warns(PrecisionWarning, match="mamba in float16 is off by nan"):
        pc.compile("mamba", dim=8, dtype=torch.float16)
    with pytest.warns(PrecisionWarning, match="mamba in bfloat16 is off by"):
        pc.compile("mamba", dim=8, dtype=torch.bfloat16)
    from padre_compiler.verify.lowering import WIDE

    if WIDE:  # float64 is judged against long double where it is wider (x86)
        with pytest.warns(PrecisionWarning, match=r"mamba in float64 is off by \d\.\de\+0[1-4] "
                          ".*no dtype computes it: lower its surrogates' orders"):
            pc.compile(pc.load_spec("mamba", params={"exp_order": 32}), dim=8,
                       dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        module = pc.compile("mamba", dim=8, dtype=torch.float64)
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            for name, grid in (("padre3", (3, 3)), ("hyena", None), ("sima", None)):
                pc.compile(name, dim=64, grid=grid, dtype=dtype)
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    assert module.skip_scale.dtype == torch.float64 and torch.isfinite(module(x)).all()


def test_bfloat16_rounding_is_emulated_as_torch_rounds() -> None:
    from padre_compiler.compiler import _round_bfloat16

    v = torch.randn(4096, dtype=torch.float32) * torch.logspace(-30, 30, 4096)
    v[:3] = torch.tensor([float("nan"), float("inf"), 3.4e38])
    got = _round_bfloat16(v.numpy())
    want = v.to(torch.bfloat16).float().numpy()
    assert np.array_equal(got, want, equal_nan=True)


def test_the_module_cache_keeps_the_most_recently_used(tmp_path, monkeypatch) -> None:
    """Past `keep` modules the least recently used go, except any used within `idle_s`;
    a new module prunes the cache, and loading a cached one marks it used."""
    import os
    import time

    from padre_compiler import compiler

    def made(name: str, age_s: float) -> None:
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (time.time() - age_s,) * 2)

    (tmp_path / "__pycache__").mkdir()
    for name, age_s in [("padre_generated_m0_0.py", 10), ("padre_generated_m1_0.py", 20),
                        ("padre_generated_m2_0.py", 7200), ("padre_generated_m3_0.py", 7300),
                        ("padre_generated_m4_0.123.tmp", 9000), ("other.py", 9999),
                        ("__pycache__/padre_generated_m2_0.cpython-311.pyc", 7200)]:
        made(name, age_s)
    assert compiler.prune_cache(tmp_path, keep=1, idle_s=3600) == 4  # m1: used recently
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "__pycache__", "other.py", "padre_generated_m0_0.py", "padre_generated_m1_0.py"]
    assert not any((tmp_path / "__pycache__").iterdir())

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # the module runs from source:
    monkeypatch.setattr(compiler, "CACHE_DIR", tmp_path)     # no bytecode written
    monkeypatch.setattr(compiler, "CACHE_KEEP", 2)
    monkeypatch.setattr(compiler, "CACHE_IDLE_S", 0.0)
    made("padre_generated_old_0.py", 7200)
    cached = compiler.load_source("X = 1\n", "cached")
    made(Path(cached.__file__).name, 7200)  # cached, last used long ago ...
    del sys.modules[cached.__name__]
    compiler.load_source("X = 1\n", "cached")  # ... and used now: it stays
    compiler.load_source("X = 2\n", "fresh")  # a new module prunes to 2
    assert sorted(p.name[:len("padre_generated_cached")]
                  for p in tmp_path.glob("padre_generated_*")) == [
        "padre_generated_cached", "padre_generated_fresh_"]
    assert not any((tmp_path / "__pycache__").iterdir())


def test_a_cache_folder_that_cannot_be_made_is_named_with_its_variable(monkeypatch,
                                                                       tmp_path) -> None:
    """PADRE_CACHE_DIR naming a file: a PadreError naming the variable (it was a bare
    FileExistsError); set but empty: the default cache (it was the working directory)."""
    import subprocess

    from padre_compiler import compiler

    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setattr(compiler, "CACHE_DIR", afile)
    with pytest.raises(PadreError, match=r"cannot make the module cache .*afile.*PADRE_CACHE_DIR"):
        compiler.load_source("X = 3\n", "nowhere")
    env = {**__import__("os").environ, "PADRE_CACHE_DIR": ""}
    out = subprocess.run([sys.executable, "-c", "from padre_compiler import compiler; "
                          "print(compiler.CACHE_DIR)"], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.strip()
    assert out == str(Path.home() / ".cache" / "padre_compiler")


def test_compile_under_a_meta_default_device_builds_a_meta_module() -> None:
    """Deferred initialisation (timm builds models under torch.device("meta")): the checks
    run on the CPU, the module is built on the default device (its weights' values were read
    for the precision check, which a meta tensor has none of)."""
    from padre_compiler.nn import PadreAttention

    with torch.device("meta"):
        module = pc.compile("padre3", dim=16, grid=(4, 4), dtype="float16")
        attn = PadreAttention(16, spec="sima")
    assert {p.device.type for p in [*module.parameters(), *attn.parameters()]} == {"meta"}
    assert module.certificate.passed


def test_dtype_defaults_to_torchs_default_dtype() -> None:
    """As nn.Linear's: without dtype=, the module is built in torch.get_default_dtype() (it
    was float32 whatever the default), and the rounding check follows it: mamba, off by ~1e7
    in float32, computes its spec in float64 (no PrecisionWarning)."""
    from padre_compiler.errors import PrecisionWarning

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PrecisionWarning)
            module = pc.compile("mamba", dim=8)
    finally:
        torch.set_default_dtype(previous)
    assert {p.dtype for p in module.parameters()} == {torch.float64}
    assert module.certificate.passed and module.certificate.code.passed
    assert pc.compile("hyena", dim=4).out_proj_weight.dtype == torch.float32


def test_a_repeated_compile_reuses_the_build_with_fresh_weights(monkeypatch) -> None:
    """A ViT's blocks compile one spec at one size: the second compile certifies nothing and
    loads no class (the most of a build), and returns a new module of the same class, certificate
    and source whose weights are its own, drawn afresh; a load of the same file by its path
    is the same spec. The rounding check's verdict is kept too: it warns every time."""
    from padre_compiler import compiler
    from padre_compiler.errors import PrecisionWarning
    from padre_compiler.spec.loader import resolve_spec_path

    monkeypatch.setattr(compiler, "_built", {})
    certified = []
    real = compiler.code_certificate
    monkeypatch.setattr(compiler, "code_certificate",
                        lambda *a, **kw: certified.append(a[0]) or real(*a, **kw))
    first = pc.compile("padre3", dim=64, grid=(7, 7))
    second = pc.compile(resolve_spec_path("padre3"), dim=64, grid=(7, 7))
    assert len(certified) == 1
    assert type(second) is type(first) and second.compiled is first.compiled
    assert second.source == first.source and second.certificate is first.certificate
    assert second.certificate.passed and second.certificate.code.passed
    pairs = list(zip(first.parameters(), second.parameters(), strict=True))
    assert all(a.data_ptr() != b.data_ptr() for a, b in pairs)
    assert not torch.equal(first.proj_weight, second.proj_weight)  # drawn afresh
    with torch.no_grad():
        second.proj_weight.zero_()
    assert first.proj_weight.abs().sum() > 0
    pc.compile("padre3", dim=64, grid=(7, 8))  # another size: another build
    pc.compile("padre3", dim=64, grid=(7, 7), backend="triton")  # another backend
    assert len(certified) == 3
    for _ in range(2):
        with pytest.warns(PrecisionWarning, match="mamba in float32 is off by"):
            pc.compile("mamba", dim=8)


def test_a_seeded_compile_draws_the_same_weights_cached_or_not(monkeypatch) -> None:
    """The certificate's probe draws from a fork of torch's generator: the first compile
    (certified) and the second (cached) of one seed are equal."""
    from padre_compiler import compiler

    monkeypatch.setattr(compiler, "_built", {})
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        weights.append(pc.compile("hyena", dim=16).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_patched_reference_rule_is_a_new_build(monkeypatch) -> None:
    """The verifier is part of a build's key: a reference rule replaced after a passing build
    is not served its verdict."""
    from padre_compiler import compiler
    from padre_compiler.ir.ops import reference_rules

    monkeypatch.setattr(compiler, "_built", {})
    pc.compile("conv2former", dim=8, grid=(4, 4))
    real = reference_rules["dwconv2d"]
    monkeypatch.setitem(reference_rules._rules, "dwconv2d", lambda *a: 2 * real(*a))
    with pytest.raises(pc.CertificateError):
        pc.compile("conv2former", dim=8, grid=(4, 4))


def test_a_failing_certificate_is_raised_on_every_compile(monkeypatch) -> None:
    """A build is keyed by its generated source: a lowering helper patched to drop the
    kernel's outer ring is not served the earlier, passing build, and its failing certificate
    is raised on each compile (no module of it is handed out)."""
    from padre_compiler import compiler
    from padre_compiler.backends import pytorch

    monkeypatch.setattr(compiler, "_built", {})
    pc.compile("conv2former", dim=8, grid=(14, 14))
    old = "    y = F.conv2d(x4, weight.unsqueeze(1)"
    monkeypatch.setitem(pytorch.HELPERS, "dwconv2d", pytorch.HELPERS["dwconv2d"].replace(
        old, "    weight = weight.clone()\n    weight[:, [0, -1], :] = 0\n" + old))
    for _ in range(2):
        with pytest.raises(pc.CertificateError, match="failed its certificate"):
            pc.compile("conv2former", dim=8, grid=(14, 14))


@pytest.mark.parametrize(("name", "share"), [("hyena", 0.46), ("mamba_lti", 0.80)])
def test_long_filters_past_the_tokens_get_no_gradient(name: str, share: float) -> None:
    """The README's figures: at 196 tokens and D = 192 the taps past the 196th of the bundled
    1,024-tap filters (and what only they read) get an exactly zero gradient."""
    module = pc.compile(name, dim=192)
    module(torch.randn(2, 196, 192)).square().sum().backward()
    total = sum(p.numel() for p in module.parameters())
    zero = sum(int((p.grad == 0).sum()) for p in module.parameters())
    assert round(zero / total, 2) == share


@pytest.mark.parametrize("kw, words", [
    (dict(fixed_dim=0), "fixed_dim: expected a positive integer or None, got int 0"),
    (dict(fixed_dim=-3), "got int -3"),
    (dict(fixed_dim="8"), "got str '8'"),  # was written into the generated constructor as code
    (dict(fixed_dim=8.0), "got float 8.0"),  # was an AttributeError in compile
    (dict(fixed_dim=True), "got bool True"),
    (dict(description=3), "description: expected a string, got int 3"),
    (dict(output=3), "output: expected a spec expression, got int 3"),
])
def test_dsl_spec_checks_its_arguments(kw: dict, words: str) -> None:
    """dsl.spec refused nothing of these: fixed_dim = '8' compiled to a module that refused
    dim=8 ("valid at dim = 8 only, not 8"), 8.0 crashed compile, output=3 was an
    AttributeError."""
    x = dsl.tokens("sequence")
    with pytest.raises(pc.SpecError, match=re.escape(words)):
        dsl.spec("s", layout="sequence", **{"output": dsl.dense(x, "w"), **kw})
    spec = dsl.spec("s", layout="sequence", output=dsl.dense(x, "w"), fixed_dim=np.int64(8))
    assert spec.fixed_dim == 8 and type(spec.fixed_dim) is int


def test_dsl_refuses_operands_and_names_of_the_wrong_type() -> None:
    """A non-expression operand was an AttributeError ('str' object has no attribute
    'layout'), a non-string name a TypeError from inside re."""
    x = dsl.tokens("sequence")
    for wrong, got in ((lambda: dsl.dense("x", "w"), "str 'x'"),
                       (lambda: dsl.dense(None, "w"), "NoneType None"),
                       (lambda: dsl.add(x, 3), "int 3")):
        with pytest.raises(pc.SpecError, match=re.escape(f"takes spec expressions, got {got}")):
            wrong()
    with pytest.raises(pc.SpecError, match=re.escape("op name 3 is not a string (int)")):
        dsl.dense(x, 3)
    with pytest.raises(pc.SpecError, match=re.escape("spec name None is not a string")):
        dsl.spec(None, layout="sequence", output=dsl.dense(x, "w"))


def test_a_spec_that_is_not_a_path_name_or_spec_is_an_argument_error() -> None:
    """compile(3, ...), load_spec(None) and PadreAttention(spec=3) were TypeErrors from inside
    pathlib; load_spec's params as a list was read as one parameter named "('heads', 2)"."""
    from padre_compiler.nn import PadreAttention

    for call in (lambda: pc.compile(3, dim=8), lambda: pc.load_spec(None),
                 lambda: PadreAttention(8, spec=3)):
        with pytest.raises(pc.ArgumentError, match=r"spec=(3|None): give a spec file's path"):
            call()
    with pytest.raises(pc.ArgumentError, match=re.escape("params=[('heads', 2)]: give a mapping")):
        pc.load_spec("castling_vit", params=[("heads", 2)])


def test_dsl_surrogate_checks_the_types_of_order_and_range() -> None:
    """order=True was a TypeError from numpy ("deg must be an int"), lo='a' one from the
    domain comparison."""
    x = dsl.tokens("sequence")
    with pytest.raises(pc.SpecError, match=r"order must be an integer in 1\.\.64, got True"):
        dsl.surrogate(x, "gelu", True, -1, 1)
    for lo, hi in (("a", 1), (-1, None)):
        with pytest.raises(pc.SpecError, match="range: expected two numbers lo, hi"):
            dsl.surrogate(x, "gelu", 4, lo, hi)
    assert dsl.surrogate(x, "gelu", 4, np.float32(-1), 1).op == "poly"
