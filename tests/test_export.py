"""ONNX export: every bundled spec exports and runs in onnxruntime within the fuzzer's rule; the
check fails a model that computes something else; constants keep float64's digits; the CLI
refuses bad input before the export's work and writes nothing it has not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from padre_compiler import dsl
from padre_compiler.cli import main
from padre_compiler.errors import PadreError
from padre_compiler.export import OnnxCheck, check_onnx, export_onnx
from padre_compiler.spec.loader import bundled_specs, load_spec

SMALL_MAMBA = {"exp_order": 6, "softplus_order": 4, "states": 2}


def _size(spec) -> dict:
    return {"dim": spec.fixed_dim or 16, "grid": (3, 4) if spec.layout == "grid2d" else None,
            "tokens": 12}


@pytest.mark.parametrize("name", [p.stem for p in bundled_specs()])
def test_every_bundled_spec_exports_and_computes_the_spec(name: str) -> None:
    """float32 (mamba, whose expanded scan float32 cannot evaluate, in float64 at lower orders:
    onnxruntime has float64 kernels for its ops, not for Conv)."""
    spec = load_spec(name, params=SMALL_MAMBA) if name == "mamba" else load_spec(name)
    dtype = "float64" if name == "mamba" else "float32"
    export = export_onnx(spec, dtype=dtype, **_size(spec))
    check = check_onnx(export)
    assert check.ok, check.line()
    assert export.dynamic_tokens == (spec.layout == "sequence" and "hyena" not in name
                                     and name != "mamba_lti")


def test_float16_export() -> None:
    export = export_onnx("padre3", dim=16, grid=(3, 4), dtype="float16")
    assert check_onnx(export).ok


def test_float16_export_where_the_zero_input_maps_to_zero_up_to_rounding() -> None:
    """silu's surrogate p(0) is 0 up to float64 rounding: the reference there is ~6e-17 and the
    twin exactly 0, so the zero input's own allowance was ~1e-16 and a correct float16 model
    (~1e-4 off there) failed; it gets the N(0, 1) inputs' smallest allowance, and a failure
    names its input."""
    x = dsl.tokens("sequence")
    spec = dsl.spec("z1", layout="sequence",
                    output=dsl.surrogate(dsl.dense(x, "w"), "silu", 6, -3.0, 3.0))
    check = check_onnx(export_onnx(spec, dim=8, tokens=4, dtype="float16"))
    assert check.ok, check.line()
    assert f"at x {check.worst}" in check.line()


def test_the_check_fails_a_model_that_computes_something_else() -> None:
    import onnx
    from onnx import numpy_helper

    export = export_onnx("padre3", dim=16, grid=(3, 4))
    model = onnx.load_from_string(export.model)
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert weights
    scaled = numpy_helper.from_array(numpy_helper.to_array(weights[0]) * 1.001, weights[0].name)
    weights[0].CopyFrom(scaled)
    check = check_onnx(export, model.SerializeToString())
    assert not check.passed and check.error > check.allowed and " > " in check.line()


def _gelu_mlp():
    x = dsl.tokens("sequence")
    hidden = dsl.surrogate(dsl.dense(x, "up"), "gelu", 8, -6.0, 6.0)
    return dsl.spec("gelu_mlp", layout="sequence", output=dsl.dense(hidden * x, "down"))


def test_float64_constants_keep_their_digits(monkeypatch) -> None:
    """The exporter makes a Python float a float32 constant cast to float64: a surrogate's
    coefficients written as Python floats lose 29 bits, which the check sees (1e-7 against
    1e-9); the generated helper keeps them as tensors in the activation's dtype."""
    from padre_compiler.backends import pytorch

    spec = _gelu_mlp()
    assert check_onnx(export_onnx(spec, dim=8, tokens=12, dtype="float64")).passed
    python_floats = '''
def _chebyshev(x: torch.Tensor, coeffs: tuple[float, ...], lo: float, hi: float) -> torch.Tensor:
    u = (2 * x - (lo + hi)) / (hi - lo)
    b1 = b2 = torch.zeros_like(u)
    for ck in reversed(coeffs[1:]):
        b1, b2 = ck + 2 * u * b1 - b2, b1
    return coeffs[0] + u * b1 - b2
'''
    monkeypatch.setitem(pytorch.HELPERS, "poly", python_floats)
    check = check_onnx(export_onnx(spec, dim=8, tokens=12, dtype="float64"))
    assert not check.passed and check.error > 1e-8, check.line()


def test_batch_and_tokens_are_dynamic_where_onnxruntime_allows() -> None:
    import onnxruntime

    export = export_onnx("sima", dim=16, tokens=12)
    assert export.shapes() == [(1, 12), (3, 7)]
    session = onnxruntime.InferenceSession(export.model, providers=["CPUExecutionProvider"])
    x = torch.randn(2, 5, 16)
    (y,) = session.run(["y"], {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, export.module(x).numpy(), rtol=1e-4, atol=1e-5)
    fixed = export_onnx("hyena", dim=16, tokens=12)  # FFTs: onnxruntime's DFT needs 2N fixed
    assert not fixed.dynamic_tokens and fixed.shapes() == [(1, 12), (3, 12)]


def test_a_dtype_that_cannot_evaluate_the_spec_is_not_judged(tmp_path: Path, capsys) -> None:
    """mamba's expanded scan at order 16 in float32 is off by as much as its output: any model
    would pass, so the check says it judged nothing, and the CLI writes nothing."""
    out = tmp_path / "m.onnx"
    params = {"exp_order": 16, "softplus_order": 4, "states": 1}
    assert main(["export", "mamba", "-o", str(out), "--dim", "8", "--tokens", "12",
                 *(a for k, v in params.items() for a in ("--param", f"{k}={v}"))]) == 1
    printed = capsys.readouterr()
    assert "cannot be judged in float32" in printed.err
    assert "not judged" in printed.out and "export float64" in printed.out
    assert not out.exists()


def test_an_input_the_twin_cannot_evaluate_is_reported() -> None:
    """Castling-ViT's l2 normalisations have eps = 0: at the all-zero input the spec lowered op
    by op is 0/0, so that input is not compared in full, and the check says so. sima's eps of
    1e-12 stays in float16 (the normaliser runs in float32), so every input is compared."""
    check = check_onnx(export_onnx("castling_vit", dim=16, tokens=12))
    assert check.ok and check.unjudged == ("[1, 12] of zeros",)
    assert "not compared in full at x [1, 12] of zeros" in check.line()
    assert check_onnx(export_onnx("sima", dim=16, tokens=12, dtype="float16")).unjudged == ()


def test_the_exporters_optimiser_is_off_and_the_zero_input_shows_why(monkeypatch) -> None:
    """torch.onnx's optimiser folds sima's l1 normalisation x / (sum |x| + eps) to x / sum |x|:
    at an all-zero input that is 0/0, which the check's zero input sees."""
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: real(*a, **{**k, "optimize": True}))
    check = check_onnx(export_onnx("sima", dim=16, tokens=12))
    assert not check.passed and "of zeros, non-finite output" in check.line()
    monkeypatch.setattr(torch.onnx, "export", real)
    assert check_onnx(export_onnx("sima", dim=16, tokens=12)).ok


def test_one_token_exports_a_dynamic_token_axis() -> None:
    """Traced at 1 token, the exporter would make the axis a constant 1."""
    export = export_onnx("sima", dim=16, tokens=1)
    assert export.dynamic_tokens and export.shapes() == [(1, 1), (3, 3)]
    assert check_onnx(export).ok


def test_weights_must_be_a_finite_float_state_dict() -> None:
    import padre_compiler as pc

    good = pc.compile("padre3", dim=16, grid=(3, 4)).state_dict()
    name = next(iter(good))
    for weights, match in (({**good, 1: torch.zeros(1)}, "floating-point tensors"),
                           ({**good, name: good[name].long()}, "floating-point tensors"),
                           ({**good, name: good[name] * float("nan")}, f"{name} not finite"),
                           ({**good, name: good[name] * 1e6}, f"{name} not finite in float16")):
        with pytest.raises(PadreError, match=match):
            export_onnx("padre3", dim=16, grid=(3, 4), weights=weights,
                        dtype="float16" if "float16" in match else "float32")


def test_export_refuses_missing_packages_and_bad_sizes(monkeypatch) -> None:
    with pytest.raises(PadreError, match="long filters have 1024 taps"):
        export_onnx("hyena", dim=16, tokens=1025)
    with pytest.raises(PadreError, match="ONNX export takes"):
        export_onnx("padre3", dim=16, dtype="bfloat16")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    export = export_onnx("padre3", dim=16, grid=(3, 4))  # --no-check needs no onnxruntime
    with pytest.raises(PadreError, match=r"needs onnxruntime: pip install '[a-z-]+\[onnx\]'"):
        check_onnx(export)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(PadreError, match="needs onnxscript"):
        export_onnx("padre3", dim=16)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "padre_compiler.cli", "export", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_export_writes_a_checked_model(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "padre3.onnx"
    proc = _cli("padre3", "-o", str(out), "--dim", "16", "--grid", "3x4")
    assert proc.returncode == 0, proc.stderr
    assert "check          onnxruntime at x [1, 12], [3, 12], [1, 12] of zeros" in proc.stdout
    assert "input x [batch, 12, 16] float32, grid 3x4" in proc.stdout
    assert out.stat().st_size > 0 and not list(out.parent.glob(".*.tmp"))


def test_cli_export_with_saved_weights(tmp_path: Path) -> None:
    import onnxruntime

    import padre_compiler as pc

    module = pc.compile("conv2former", dim=16, grid=(3, 4))
    torch.save(module.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "c.onnx"
    proc = _cli("conv2former", "-o", str(out), "--dim", "16", "--grid", "3x4", "--weights",
                str(tmp_path / "w.pt"))
    assert proc.returncode == 0, proc.stderr
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 12, 16)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(["y"], {"x": x.numpy()})[0], module(x).numpy(),
                                   rtol=1e-4, atol=1e-5)
    proc = _cli("conv2former", "-o", str(out), "--dim", "32", "--grid", "3x4", "--weights",
                str(tmp_path / "w.pt"))
    assert proc.returncode == 2 and "not conv2former's weights at dim 32" in proc.stderr
    assert "(they are at --dim 16: pass it)" in proc.stderr  # the width that fits, named
    assert "Traceback" not in proc.stderr
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    proc = _cli("conv2former", "-o", str(out), "--weights", str(tmp_path / "junk.pt"))
    assert proc.returncode == 2 and "torch.save(module.state_dict(), FILE)" in proc.stderr


def test_cli_export_refuses_before_work_and_leaves_nothing(tmp_path: Path) -> None:
    proc = _cli("padre3", "-o", str(tmp_path), "--dim", "16")
    assert proc.returncode == 2 and "a folder; give a file path such as" in proc.stderr
    assert "model.onnx" in proc.stderr and "exporting" not in proc.stdout
    out = tmp_path / "h.onnx"
    proc = _cli("hyena", "-o", str(out), "--dim", "16", "--tokens", "12", "--dtype", "float64")
    assert proc.returncode == 2 and "lack this op in float64" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_cli_export_writes_nothing_that_fails_its_check(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    from padre_compiler import export

    monkeypatch.setattr(export, "check_onnx",
                        lambda e: OnnxCheck(False, True, 1.0, 1e-4, 1e-7, ["[1, 12]"], "[1, 12]"))
    out = tmp_path / "p.onnx"
    assert main(["export", "padre3", "-o", str(out), "--dim", "16", "--grid", "3x4"]) == 1
    assert not out.exists() and "not written" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's pytree deprecation
def test_a_vit_block_with_padre_attention_exports() -> None:
    """The drop-in path: a pre-norm transformer block with PadreAttention (a class token
    reading the mixed grid) in the attention slot, exported by torch.onnx as a whole, runs in
    onnxruntime as in torch."""
    import onnxruntime

    from padre_compiler.nn import PadreAttention

    class Block(torch.nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
            self.attn = PadreAttention(dim, num_heads=2, grid_size=(3, 4), num_prefix_tokens=1)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                           torch.nn.Linear(2 * dim, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    block = Block(16).eval()
    x = torch.randn(2, 1 + 12, 16)
    program = torch.onnx.export(block, (x,), dynamo=True, input_names=["x"], verbose=False)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], block(x).numpy(),
                                   rtol=1e-4, atol=1e-5)
