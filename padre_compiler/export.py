"""ONNX export of a compiled module (torch backend), checked in onnxruntime.

`export_onnx` builds the spec's PyTorch module at one width (and grid), with its default init
or given weights, exports it with torch.onnx's dynamo exporter (batch dynamic; a sequence
spec's tokens dynamic too, up to its long filters' length, except where it convolves by FFT:
onnxruntime's DFT fails at lengths other than the exported one) and serialises it.
`check_onnx` runs the serialised model in onnxruntime at two input shapes and compares it
with the float64 reference evaluation of the spec graph, on the model's own weights, under
the fuzzer's output rule (`output_allowance`: twice the error of the spec lowered op by op in
the same dtype, plus the fixed tolerance of fp32/fp64; in float64 at least the code
certificate's four times, since onnxruntime orders a cancelling sum its own way): an exporter
that changes what the module computes, or a runtime kernel that does, fails it.

The exporter turns a Python float scalar into a float32 constant cast to the tensor's dtype,
so a float64 module loses every constant's last 29 bits; the generated code therefore keeps
surrogate coefficients as tensors in the activation's dtype (`_chebyshev`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padre_compiler.backends.reference import run_graph
from padre_compiler.compiler import as_spec, compile_module_class, eager_class, generate, max_tokens
from padre_compiler.errors import PadreError
from padre_compiler.ir.ops import EvalContext
from padre_compiler.spec.model import Spec
from padre_compiler.verify.certificate import float64_allowance
from padre_compiler.verify.fuzz import output_allowance

DTYPES = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64}
INFORMATIVE = 1e-2  # the op-by-op graph's relative error below which a dtype can judge at all
INSTALL = "pip install 'padre-compiler[onnx]' (onnx, onnxscript and onnxruntime)"


@dataclass(frozen=True)
class OnnxExport:
    model: bytes  # the serialised ModelProto
    module: torch.nn.Module  # what was exported, with its weights
    spec: Spec
    dim: int
    grid: tuple[int, int] | None
    tokens: int  # the example's token count (a grid's H * W)
    dtype: str
    dynamic_tokens: bool
    opset: int
    nodes: int

    def shapes(self) -> list[tuple[int, int]]:
        """(batch, tokens) of the two inputs `check_onnx` runs: batch 1 and 3, and with
        dynamic tokens a second length."""
        other = max(1, self.tokens // 2 + 1) if self.dynamic_tokens else self.tokens
        return [(1, self.tokens), (3, other)]


@dataclass(frozen=True)
class OnnxCheck:
    passed: bool
    informative: bool  # False where the dtype's own rounding exceeds INFORMATIVE or overflows
    error: float  # the worst relative error over the shapes run
    allowed: float  # its relative allowance
    twin_error: float  # the op-by-op graph's relative error at that shape
    shapes: list[tuple[int, int]]

    def line(self) -> str:
        runs = ", ".join(f"[{b}, {n}]" for b, n in self.shapes)
        if not math.isfinite(self.twin_error):
            return (f"onnxruntime at x {runs}: not judged, the spec lowered op by op overflows "
                    "this dtype at these inputs: export float32 or float64 to check it")
        verdict = "<=" if self.passed else ">"
        text = (f"onnxruntime at x {runs}: max rel. error vs float64 reference {self.error:.1e} "
                f"{verdict} {self.allowed:.1e} (the fuzzer's rule, from the error of the spec "
                f"lowered op by op in this dtype: {self.twin_error:.1e})")
        if not self.informative:
            text += ("; this dtype carries no information here (the op-by-op graph is off by "
                     f"{self.twin_error:.0e}): export float64 to check it")
        return text


def _onnx_modules() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise PadreError(f"ONNX export needs {err.name}: {INSTALL}") from None
    return onnxruntime


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's logging and prints (progress, skipped torchvision ops) held back."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(spec: str | Path | Spec, *, dim: int, grid: tuple[int, int] | None = None,
                tokens: int = 196, dtype: str = "float32",
                weights: dict[str, torch.Tensor] | None = None, seed: int = 0) -> OnnxExport:
    """The spec's module at `dim` (a 2-D spec at `grid`, default 14 x 14; a sequence spec
    exported at `tokens`), its weights drawn by its init from `seed` or given, as ONNX."""
    _onnx_modules()
    spec = as_spec(spec)
    if dtype not in DTYPES:
        raise PadreError(f"--dtype {dtype}: ONNX export takes {', '.join(DTYPES)}")
    if spec.layout == "grid2d":
        grid = grid or (14, 14)
        tokens = grid[0] * grid[1]
    result = generate(spec, dim=dim, grid=grid, tokens=tokens)
    cls = compile_module_class(result)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = (cls(dim, grid) if grid else cls(dim)).to(DTYPES[dtype]).eval()
    if weights is not None:
        _load_weights(module, weights, spec.name, dim)
    graph = result.records[0].graph
    limits = max_tokens(graph)
    dynamic_tokens = spec.layout == "sequence" and not graph.find("long_conv")
    if limits and tokens > min(limits):
        raise PadreError(f"--tokens {tokens}: {spec.name}'s long filters have {min(limits)} "
                         f"taps; export at most {min(limits)} tokens")
    x = torch.randn(2, tokens, dim, dtype=DTYPES[dtype])
    shapes: dict[int, Any] = {0: torch.export.Dim("batch")}
    if dynamic_tokens:
        shapes[1] = torch.export.Dim("tokens")
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, (x,), dynamo=True, input_names=["x"],
                                        output_names=["y"], dynamic_shapes=(shapes,),
                                        verbose=False)
    except Exception as err:  # the exporter's own errors are many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PadreError(f"{spec.name}: torch.onnx.export failed: {first}") from None
    proto = program.model_proto
    proto.graph.name = spec.name
    proto.doc_string = (f"padre-compiler: {spec.name} ({spec.description}), dim {dim}, "
                        + (f"grid {grid[0]}x{grid[1]}" if grid else f"tokens {tokens}")
                        + f", {dtype}")
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return OnnxExport(proto.SerializeToString(), module, spec, dim, grid, tokens, dtype,
                      dynamic_tokens, opset, len(proto.graph.node))


def _load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], name: str,
                  dim: int) -> None:
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if len(got) != len(weights):
        raise PadreError("--weights: not a state dict of tensors (torch.save(module.state_dict()"
                         ", FILE) writes one)")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []) + [
            f"{k} is {list(got[k])}, not {list(want[k])}" for k in wrong]
        raise PadreError(f"--weights: not {name}'s weights at dim {dim}: {'; '.join(parts)}")
    module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in weights.items()})


def check_onnx(export: OnnxExport, model: bytes | None = None, seed: int = 1) -> OnnxCheck:
    """`model` (default: the export's own) in onnxruntime against the float64 reference on the
    export's weights, at `export.shapes()`, under the fuzzer's output rule."""
    ort = _onnx_modules()
    try:
        session = ort.InferenceSession(model or export.model,
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        hint = (f"; onnxruntime's CPU kernels lack this op in {export.dtype}: export another "
                "dtype, or write the model unchecked (--no-check)"
                if "NOT_IMPLEMENTED" in str(err) else "")
        raise PadreError(f"{export.spec.name}: onnxruntime cannot load the {export.dtype} "
                         f"model: {_first_line(err)}{hint}") from None
    graph = export.spec.graph()
    dtype = DTYPES[export.dtype]
    params = {k: v.detach() for k, v in export.module.state_dict().items()}
    twin = eager_class(graph, export.spec.name)
    twin = (twin(export.dim, export.grid) if export.grid else twin(export.dim)).to(dtype)
    twin.load_state_dict(params)
    rng = np.random.default_rng(seed)
    rows = []  # relative (error, allowance, the twin's error) at each shape
    for batch, tokens in export.shapes():
        x = torch.tensor(rng.standard_normal((batch, tokens, export.dim))).to(dtype)
        ref = run_graph(graph, x.double().numpy(),
                        {k: v.double().numpy() for k, v in params.items()},
                        EvalContext(grid=export.grid))
        try:
            (y,) = session.run(["y"], {"x": x.numpy()})
        except Exception as err:
            raise PadreError(f"{export.spec.name}: onnxruntime failed on x [{batch}, {tokens}]: "
                             f"{_first_line(err)}") from None
        with torch.no_grad():
            twin_y = twin(x).double().numpy()
        scale = max(float(np.abs(ref).max(initial=0.0)), 1e-300)
        error = float(np.abs(y.astype(np.float64) - ref).max(initial=0.0))  # NaN stays NaN
        twin_error = float(np.abs(twin_y - ref).max(initial=0.0))
        if np.isfinite(twin_error):  # else beyond the dtype's range: the twin sets no rule
            allowed = output_allowance(export.dtype, twin_error, scale)
            if export.dtype == "float64":  # another evaluation order: the certificate's rule
                allowed = max(allowed, float64_allowance(twin_error / scale) * scale)
            rows.append((error / scale, allowed / scale, twin_error / scale))
    if not rows:
        return OnnxCheck(True, False, math.nan, math.inf, math.inf, export.shapes())
    failing = [r for r in rows if not r[0] <= r[1]]
    error, allowed, twin_error = failing[0] if failing else max(rows, key=lambda r: r[0] / r[1])
    return OnnxCheck(not failing, bool(twin_error < INFORMATIVE), error, allowed, twin_error,
                     export.shapes())


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
