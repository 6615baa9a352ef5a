"""Generated code: committed files are current, deterministic, standalone (torch only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from padre_compiler.backends.pytorch import without_unused_imports
from padre_compiler.cli import codegen_path
from padre_compiler.compiler import generate
from padre_compiler.spec.loader import bundled_specs, load_spec

SPECS = [p.stem for p in bundled_specs()]


@pytest.mark.parametrize("name", SPECS)
def test_committed_codegen_is_current(name: str) -> None:
    path = codegen_path(name, "torch")
    assert path.exists(), f"{path} missing: run `padre compile --all`"
    assert path.read_text() == generate(load_spec(name)).source, (
        f"{path} is stale: run `padre compile --all` and commit the result")


@pytest.mark.parametrize("name", SPECS)
def test_generation_is_deterministic(name: str) -> None:
    assert generate(load_spec(name)).source == generate(load_spec(name)).source


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", SPECS)
def test_generated_source_reads_every_name_it_imports(name: str, backend: str) -> None:
    tree = ast.parse(codegen_path(name, backend).read_text())
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert imported <= read, imported - read


def test_unused_imports_are_dropped_where_the_file_stays_valid() -> None:
    """A top-level import nobody reads goes; so does one in a try whose body keeps another
    statement; a try's only import stays (its body cannot be empty)."""
    source = "\n".join([
        "import os", "import sys", "from math import pi, tau as t",
        "try:", "    import json", "    import re", "except ImportError:", "    json = None",
        "try:", "    import csv", "except ImportError:", "    pass",
        "print(os.sep, t, json)", ""])
    assert without_unused_imports(source) == "\n".join([
        "import os", "from math import pi, tau as t",
        "try:", "    import json", "except ImportError:", "    json = None",
        "try:", "    import csv", "except ImportError:", "    pass",
        "print(os.sep, t, json)", ""])


@pytest.mark.parametrize("name", SPECS)
def test_generated_source_imports_only_torch(name: str) -> None:
    tree = ast.parse(codegen_path(name, "torch").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"torch", "torch.nn.functional"}, modules


@pytest.mark.parametrize("name", SPECS)
def test_generated_file_runs_without_padre_compiler(name: str, tmp_path: Path) -> None:
    spec = load_spec(name)
    ctor = "(16, (3, 5))" if spec.layout == "grid2d" else "(16)"
    n = 15 if spec.layout == "grid2d" else 9
    script = (
        "import sys, importlib.util\n"
        "sys.modules['padre_compiler'] = None  # any import of the compiler now fails\n"
        f"s = importlib.util.spec_from_file_location('m', {str(codegen_path(name, 'torch'))!r})\n"
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
        "import torch\n"
        f"mod = getattr(m, {generate(spec).class_name!r}){ctor}\n"
        f"x = torch.randn(2, {n}, 16, requires_grad=True)\n"
        "y = mod(x); y.sum().backward()\n"
        f"assert y.shape == (2, {n}, 16) and x.grad is not None\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_codegen_names_parameters_after_the_spec() -> None:
    source = codegen_path("conv2former", "torch").read_text()
    for name in ("w1_weight", "dwconv_weight", "w2_weight", "w3_weight"):
        assert f"self.{name} = nn.Parameter" in source


@pytest.mark.parametrize("name", SPECS)
def test_generated_module_traces_whole_under_torch_compile(name: str) -> None:
    """No graph break: the module can sit inside a torch.compile'd model (aot_eager traces
    forward and backward without generating code)."""
    import torch

    from padre_compiler import compile as compile_spec

    spec = load_spec(name)
    grid = (3, 5) if spec.layout == "grid2d" else None
    module = compile_spec(spec, dim=16, grid=grid, dtype=torch.float64)  # mamba: see README
    traced = torch.compile(module, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 15 if grid else 9, 16, dtype=torch.float64, requires_grad=True)
    y = traced(x)
    y.sum().backward()
    assert torch.allclose(y, module(x), rtol=1e-9) and x.grad is not None


def test_castling_vit_trains_under_inductor_at_a_second_token_count() -> None:
    """Inductor recompiles at the second token count with it dynamic; a saved per-head view
    of a computed tensor (the normaliser's) had failed its stride ordering there
    (pytorch/pytorch#185510), in training only."""
    import torch

    from padre_compiler import compile as compile_spec

    module = compile_spec("castling_vit", dim=16)
    compiled = torch.compile(module)
    for n in (9, 14):
        x = torch.randn(2, n, 16, requires_grad=True)
        y = compiled(x)
        y.sum().backward()
        torch.testing.assert_close(y, module(x))


@pytest.mark.parametrize("name", ["hyena", "mamba_lti"])
def test_long_convolution_traces_under_jit_trace_and_follows_the_length(name: str) -> None:
    """torch.jit.trace records sizes as 0-d tensors, which have no int.bit_length (the FFT
    size's): the trace failed. Computed by tensor ops there, the FFT size follows N, so a
    trace at 12 tokens (FFT size 32) runs at 17 and 40 (64, 128)."""
    import warnings

    from padre_compiler import compile as compile_spec

    module = compile_spec(name, dim=8, dtype=torch.float64)
    with warnings.catch_warnings():  # jit's deprecation; the forward's size checks fold away
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.randn(2, 12, 8, dtype=torch.float64))
    for n in (12, 17, 40):
        x = torch.randn(2, n, 8, dtype=torch.float64)
        torch.testing.assert_close(traced(x), module(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SPECS)
def test_forward_frees_every_intermediate_after_its_last_use(name: str) -> None:
    """Each local is deleted right after the statement that reads it last (never earlier) or
    returned; nothing is read after its del."""
    import ast

    tree = ast.parse(codegen_path(name, "torch").read_text())
    forward = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                   and n.name == "forward")
    deleted: set[str] = set()
    assigned: set[str] = set()
    for k, stmt in enumerate(forward.body):
        loads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Load)}
        assert not loads & deleted, (name, loads & deleted)
        if isinstance(stmt, ast.Delete):
            gone = {t.id for t in stmt.targets}
            later = {n.id for s in forward.body[k + 1:] for n in ast.walk(s)
                     if isinstance(n, ast.Name)}
            assert not gone & later and gone <= assigned
            deleted |= gone
        assigned |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Store)}
    returned = {n.id for n in ast.walk(forward.body[-1]) if isinstance(n, ast.Name)}
    assert assigned - {"B", "N", "_", "D", "H", "W"} <= deleted | returned  # ints


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_normalisers_keep_their_eps_and_range_in_half_precision(dtype: torch.dtype) -> None:
    """SimA's eps of 1e-12 is 0 in float16, and a column's l1 norm over 128 tokens of 1000 is
    past float16's 65504: the generated normalisers take norm, eps and quotient in float32, so
    an all-zero input maps to zeros, and a large float16 one to the float64 reference's output
    (bfloat16 has float32's range, but no precision to spare for this check)."""
    import padre_compiler as pc

    torch.manual_seed(0)
    module = pc.compile("sima", dim=16)
    half = pc.compile("sima", dim=16).to(dtype)
    half.load_state_dict(module.state_dict())
    zeros = torch.zeros(2, 128, 16, dtype=dtype)
    assert torch.equal(half(zeros), zeros)
    if dtype == torch.bfloat16:
        return
    x = 1000 * (1 + torch.rand(2, 128, 16, dtype=torch.float64))
    want = module.double()(x)
    got = half(x.to(dtype)).double()
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() <= 1e-2 * want.abs().max()


def test_a_description_cannot_end_the_docstring(tmp_path: Path) -> None:
    """A spec's description is free text: triple quotes, backslashes and control characters in
    it stay inside the generated docstring (escaped), and nothing of it runs."""
    text = 'x"""\nimport os; os.system("touch pwned")\n""" \\ end \u0000 "'
    path = tmp_path / "2d-mixer.toml"  # no name field: the stem, made an identifier
    lines = (Path(__file__).parents[1] / "specs" / "conv2former.toml").read_text().splitlines()
    path.write_text("\n".join([f"description = {_toml_string(text)}",
                               *(x for x in lines if not x.startswith(("name", "description")))]))
    spec = load_spec(path)
    assert spec.name == "spec_2d_mixer"
    for stem, name in (("none", "spec_none"), ("-", "spec"), ("_x-y", "x_y")):
        other = path.with_name(f"{stem}.toml")
        other.write_text(path.read_text())
        assert load_spec(other).name == name
    for backend in ("torch", "triton"):
        source = generate(spec, dim=8, grid=(3, 3), backend=backend).source
        tree = ast.parse(source)
        assert ast.get_docstring(tree, clean=False).startswith(f"spec_2d_mixer: {text}\n")
        assert "pwned" not in ast.unparse(ast.Module(tree.body[1:], []))


def _toml_string(text: str) -> str:
    """A TOML basic string holding `text`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped.replace("\u0000", "\\u0000") + '"'


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_sequence_longer_than_the_long_filter_is_refused(backend: str) -> None:
    """y[t] reads filt[t - s] for s <= t: past the filter's L taps the spec is undefined (the
    float64 reference refuses it), so the module refuses it too rather than treat the filter
    as zero there."""
    import padre_compiler as pc
    from padre_compiler import dsl

    x = dsl.tokens("sequence")
    gated = dsl.long_conv(dsl.dense(x, "b"), "h", length=16) * dsl.dense(x, "c")
    spec = dsl.spec("gated", layout="sequence", output=dsl.dense(gated, "proj"))
    module = pc.compile(spec, dim=8, backend=backend)
    assert module(torch.randn(1, 16, 8)).shape == (1, 16, 8)
    with pytest.raises(ValueError, match="17 tokens: the long convolution's filter has 16 taps"):
        module(torch.randn(1, 17, 8))


def _module_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at top level (imports in a top-level try too)."""
    names: set[str] = set()
    top = [*tree.body, *(n for t in tree.body if isinstance(t, ast.Try) for n in t.body)]
    for node in top:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_no_spec_name_makes_a_class_that_rebinds_a_generated_name(backend: str) -> None:
    """A class name is capitalised parts (`f` -> F); every module-level name of generated code
    that such a name can spell is in names.GENERATED_CLASS_LIKE, which specs may not take."""
    import re

    from padre_compiler import dsl
    from padre_compiler.errors import SpecError
    from padre_compiler.ir.names import GENERATED_CLASS_LIKE, class_name

    for name in SPECS:
        tree = ast.parse(codegen_path(name, backend).read_text())
        spelled = {n for n in _module_level_names(tree) - {class_name(name)}
                   if re.fullmatch(r"(?:[A-Z][a-z0-9]*)+", n)}
        assert spelled <= GENERATED_CLASS_LIKE, spelled - GENERATED_CLASS_LIKE
    x = dsl.tokens("sequence")
    for name in ("f", "channel_major_linear", "thread_pool_executor"):
        with pytest.raises(SpecError, match="which the generated module already defines"):
            dsl.spec(name, layout="sequence", output=dsl.dense(x, "p"))


def test_a_merged_parameter_never_rebinds_a_node_variable() -> None:
    """Merged parameters are prepared into `_<owner>_<role>` locals: an op named like one
    (`m_n_weight`) keeps its own variable, and the module equals the reference."""
    import numpy as np

    from padre_compiler import dsl
    from padre_compiler.backends.reference import random_params, run_graph
    from padre_compiler.compiler import compile_module_class
    from padre_compiler.verify.certificate import _load

    x = dsl.tokens("sequence")
    t = dsl.dense(x, "m_n_weight", out="dim")
    spec = dsl.spec("clash", layout="sequence",
                    output=t * dsl.dense(dsl.diagonal(x, "m"), "n") + t)
    result = generate(spec, dim=4, tokens=5)
    assert "self.n_weight * self.m_scale" in result.source  # the merge under test happened
    params = random_params(spec.graph().decls, 4, seed=1)
    xs = np.random.default_rng(0).standard_normal((2, 5, 4))
    with torch.no_grad():
        out = _load(compile_module_class(result)(4), params)(torch.tensor(xs)).numpy()
    np.testing.assert_allclose(out, run_graph(spec.graph(), xs, params), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_module_returns_a_fresh_contiguous_tensor(backend: str) -> None:
    """An output that is global_sum's broadcast (a stride-0 view) is made contiguous, and one
    that is the input itself is copied: the caller may update either in place."""
    from padre_compiler import compile as compile_spec
    from padre_compiler import dsl

    x = dsl.tokens("sequence")
    for output in (dsl.global_sum(dsl.dense(x, "a")), dsl.identity(x)):
        module = compile_spec(dsl.spec("fresh", layout="sequence", output=output), dim=4,
                              backend=backend)
        given = torch.randn(2, 3, 4)
        before = given.clone()
        y = module(given)
        assert y.is_contiguous() and y.data_ptr() != given.data_ptr()
        y += 1  # a stride-0 view refuses this
        assert torch.equal(given, before)


EMPTY_SHAPES = [(0, 6, 8), (2, 0, 8)]


@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=["no-batch", "no-tokens"])
@pytest.mark.parametrize("name", ["hyena", "mamba_lti", "castling_vit", "sima"])
def test_an_empty_batch_or_sequence_runs_forward_and_backward(name: str, shape) -> None:
    """torch's CPU FFT refuses no points and conv2d a window past its padded input; the
    module returns the empty result, and every parameter's gradient is zero (not None: the
    graph stays connected)."""
    from padre_compiler import compile as compile_spec

    module = compile_spec(name, dim=8)
    x = torch.randn(*shape, requires_grad=True)
    y = module(x)
    y.sum().backward()
    assert y.shape == x.grad.shape == shape
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_generated_class_refuses_a_width_its_heads_do_not_split(backend: str) -> None:
    """Sima(12) with 8 heads: refused by the constructor, naming valid widths (it built, and
    forward raised a reshape error); the constructor accepts exactly the widths the spec
    does."""
    from padre_compiler import dsl
    from padre_compiler.compiler import generate, load_source
    from padre_compiler.ir.graph import is_valid_dim
    from padre_compiler.spec.loader import load_spec

    result = generate("sima", dim=16, backend=backend)
    cls = getattr(load_source(result.source, "sima"), result.class_name)
    with pytest.raises(ValueError, match=r"at dim=12 a width does not split into its heads "
                                         r"\(valid: 8, 16, 24, \.\.\.\)"):
        cls(12)
    assert cls(24)(torch.randn(1, 5, 24)).shape == (1, 5, 24)
    # heads over a fixed-width input: every D (a check on D's multiples refused D = 12)
    x = dsl.tokens("sequence")
    heads = dsl.contract(dsl.expand(dsl.dense(x, "a", out=64), mode="replicate", heads=8)
                         * dsl.expand(dsl.dense(x, "b", out=64), mode="tile", heads=8),
                         keep="tile", heads=8)
    for spec in (dsl.spec("fixed", layout="sequence", output=dsl.dense(heads, "p", out="dim")),
                 load_spec("castling_vit"), load_spec("mamba")):
        result = generate(spec, dim=16, backend=backend)
        cls = getattr(load_source(result.source, spec.name), result.class_name)
        for dim in range(1, 41):  # the constructor agrees with validate_dim
            try:
                cls(dim)
                built = True
            except ValueError:
                built = False
            assert built == is_valid_dim(spec.graph(), dim), (spec.name, dim)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", SPECS)
def test_generated_methods_assign_no_local_they_never_read(name: str, backend: str) -> None:
    """The module's methods (forward, reset_parameters, __init__) assign no name they never
    read (a shape's unpacking aside): `D = self.dim` had stood in forwards that never use the
    width."""
    tree = ast.parse(codegen_path(name, backend).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        stored = {t.id for a in ast.walk(method) if isinstance(a, ast.Assign)
                  for t in a.targets if isinstance(t, ast.Name)}
        read = {n.id for n in ast.walk(method)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        assert stored <= read, (method.name, stored - read)
