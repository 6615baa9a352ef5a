"""Family specs: TOML files whose graph a builder lays out from checked parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import padre_compiler as pc
from padre_compiler.derive import castling_vit, hyena, mamba
from padre_compiler.spec.families import FAMILIES
from padre_compiler.spec.loader import load_spec


def _ops(spec: pc.Spec) -> list[str]:
    return sorted(node.op for _, node, _ in spec.graph().items())


def _structure(spec: pc.Spec) -> list[tuple]:
    return [(node.op, node.attrs, str(node.width), ins) for _, node, ins in spec.graph().items()]


@pytest.mark.parametrize("order", [1, 3])
def test_hyena_family_is_hyena_spec_of_that_order(tmp_path: Path, order: int) -> None:
    path = tmp_path / "h.toml"
    path.write_text(f'family = "hyena"\n[parameters]\norder = {order}\nfilter_length = 64\n')
    spec = load_spec(path)
    assert spec.name == "h" and spec.degree == order + 1
    assert _structure(spec) == _structure(hyena.hyena_spec(order, 64))


def test_params_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('family = "hyena"\n[parameters]\norder = 2\n')
    assert load_spec(path, params={"order": 4}).degree == 5
    assert load_spec(path).degree == 3


def test_castling_variants_differ_by_one_global_sum() -> None:
    released = load_spec("castling_vit")
    exact = load_spec("castling_vit", params={"variant": "exact_kernel"})
    assert _structure(released) == _structure(castling_vit.castling_spec(8, "released"))
    assert _structure(exact) == _structure(castling_vit.castling_spec(8, "exact_kernel"))
    diff = _ops(exact)
    for op in _ops(released):
        diff.remove(op)
    assert diff == ["global_sum"]


def test_bundled_mamba_spec_uses_the_ranges_its_proof_measures() -> None:
    """specs/mamba.toml's decay_min and softplus_range are those `padre prove mamba` reaches."""
    raw = load_spec("mamba").raw["parameters"]
    p = mamba.random_original(64, 16, seed=11)
    x = np.random.default_rng(12).standard_normal((1, 196, 64))
    u_min, sp_range = mamba.ranges(x, p)
    assert raw["decay_min"] == u_min and tuple(raw["softplus_range"]) == sp_range
    assert raw["softplus_order"] == mamba.SOFTPLUS_ORDER and raw["exp_order"] in mamba.ORDERS


@pytest.mark.parametrize("name", ["mamba", "castling_vit"])
def test_family_spec_compiles_runs_and_matches_the_reference(name: str) -> None:
    params = {"exp_order": 4, "softplus_order": 4} if name == "mamba" else {}
    spec = load_spec(name, params=params)
    module = pc.compile(spec, dim=16).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64, requires_grad=True)
    y = module(x)
    y.sum().backward()
    from padre_compiler.backends.reference import run_graph
    from padre_compiler.ir.ops import EvalContext

    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    ref = run_graph(spec.graph(), x.detach().numpy(), state, EvalContext(dim=16))
    assert np.allclose(y.detach().numpy(), ref, rtol=1e-9, atol=1e-9)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_every_family_builds_at_its_defaults() -> None:
    from padre_compiler.spec.families import build_family, family_params

    for family in FAMILIES:
        assert build_family(family, family_params(family, {})).degree >= 1


def test_cli_param_changes_the_generated_module(tmp_path: Path) -> None:
    out = tmp_path / "c.py"
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", "castling_vit",
                           "--param", "variant=exact_kernel", "--param", "heads=4", "--dim",
                           "64", "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spec = load_spec("castling_vit", params={"variant": "exact_kernel", "heads": 4})
    assert out.read_text() == pc.generate(spec, dim=64).source
    assert out.read_text() != pc.generate("castling_vit", dim=64).source


def test_castling_cubic_term_needs_and_fixes_the_head_width() -> None:
    with pytest.raises(pc.SpecError, match="head_dim"):
        load_spec("castling_vit", params={"taylor_terms": 2})
    spec = load_spec("castling_vit", params={"taylor_terms": 2, "head_dim": 2, "heads": 2})
    assert spec.fixed_dim == 4 and spec.degree == 7
    with pytest.raises(pc.PadreError, match="valid at dim = 4 only"):
        pc.compile(spec, dim=8)
    module = pc.compile(spec, dim=4).double()
    assert module(torch.randn(1, 5, 4, dtype=torch.float64)).shape == (1, 5, 4)
    from padre_compiler.derive.castling_vit import castling_spec

    with pytest.raises(pc.SpecError, match="1 or 2 odd arccos terms"):  # not silently 2
        castling_spec(taylor_terms=3, head_dim=2)


def test_cli_lists_every_family_with_its_parameters() -> None:
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "families"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name, fam in FAMILIES.items():
        assert name in proc.stdout
        assert all(f"{p} = " in proc.stdout for p in fam.params)
    assert "[decay_min, 0]" in proc.stdout  # brackets survive the console markup


def test_reduced_certificate_sizes_respect_the_heads() -> None:
    """3 heads: D = 384 is valid, the certificate's default D = 32 is not; it takes 30 (and the
    code certificate's probe 6) instead of failing the compile."""
    spec = load_spec("castling_vit", params={"heads": 3})
    module = pc.compile(spec, dim=48)
    assert module.certificate.passed and module.certificate.code.passed
    assert "D=30" in str(module.certificate)


def test_the_regenerate_line_reads_back_in_a_shell(tmp_path: Path) -> None:
    """The generated header's `padre compile ... --param ...` line, split as a shell splits
    it, parses to the parameters the spec was built with (a list value's spaces and a
    string's quotes included); a bundled spec is named by its name (it was named by its file
    name, which runs only from specs/)."""
    import shlex

    from padre_compiler import argtypes, cli

    copy = tmp_path / "mymamba.toml"
    copy.write_text((Path(cli.__file__).parents[1] / "specs" / "mamba.toml").read_text())
    params = {"softplus_range": [-8.0, 0.0], "exp_order": 4}
    spec = load_spec(copy, params=params)
    line = next(x for x in pc.generate(spec, dim=16).source.splitlines()
                if "Regenerate with:" in x).split("Regenerate with: ")[1]
    words = shlex.split(line)
    assert words[:3] == ["padre", "compile", "mymamba.toml"] and words[-2:] == ["-o", "FILE"]
    given = dict(argtypes.param(w) for w in words[4:-2:2])
    assert given == params and words[3:-2:2] == ["--param"] * len(params)
    # the file's name (run in its folder: the source must not depend on the path typed),
    # quoted; a bundled spec by its name, which runs from anywhere
    spaced = tmp_path / "a folder" / "my spec.toml"
    spaced.parent.mkdir()
    spaced.write_text(copy.read_text())
    source = pc.generate(load_spec(spaced), dim=16).source
    assert shlex.split(source.split("Regenerate with: ")[1].splitlines()[0])[2] == "my spec.toml"
    assert str(tmp_path) not in source
    bundled = pc.generate(load_spec("castling_vit", params={"heads": 4}), dim=16).source
    assert "Regenerate with: padre compile castling_vit --param heads=4 -o FILE" in bundled


def test_size_parameters_are_bounded_where_they_are_named() -> None:
    """A state count or head count past the ops' size limit is refused at the parameter (it
    was refused by an op the user never wrote: `expand.times`, `normalize.heads`), and a width
    that does not split into heads names the spec file."""
    from padre_compiler.errors import ShapeError, SpecError

    for name, param in (("mamba", "states"), ("castling_vit", "heads")):
        with pytest.raises(SpecError, match=rf"{param}: 2000000 is above the maximum 1,048,576"):
            load_spec(name, params={param: 2_000_000})
    with pytest.raises(ShapeError, match=r"sima\.toml: expand .* does not split into heads=8"):
        pc.generate("sima", dim=7)


def test_castling_head_dim_fixes_the_width_with_one_taylor_term_too() -> None:
    """head_dim = 3 with taylor_terms = 1 was ignored: the spec compiled at dim 16 with 8
    heads of width 2, not the 3 it asked for."""
    spec = load_spec("castling_vit", params={"head_dim": 3})
    assert spec.fixed_dim == 24
    with pytest.raises(pc.PadreError, match="valid at dim = 24 only, not 16"):
        pc.compile(spec, dim=16)
    assert load_spec("castling_vit").fixed_dim is None  # head_dim = 0: any width
