"""ONNX export of a compiled module (torch backend), checked in onnxruntime.

`export_onnx` builds the spec's PyTorch module at one width (and grid), with its default init
or given weights, exports it with torch.onnx's dynamo exporter (batch dynamic; a sequence
spec's tokens dynamic too, except where it convolves by FFT: onnxruntime's DFT fails at lengths
other than the exported one) and serialises it. The exporter's graph optimiser is off: it
drops an l1 normalisation's `+ eps`, which makes an all-zero column 0/0.

`check_onnx` runs the serialised model in onnxruntime at three inputs (N(0, 1) at batch 1 and
3, a second length where tokens are dynamic, and an all-zero input, where normalisers meet
their eps; in float16 an eps of 1e-12 is 0 and the spec lowered op by op is 0/0 there, which
the check reports as not judged) and compares it with the float64 reference evaluation of the
spec graph on the model's own weights, under the fuzzer's output rule (`compare`: twice the
error of the spec lowered op by op in the same dtype, plus the fixed tolerance of fp32/fp64; in
float64 at least the code certificate's four times, since onnxruntime orders a cancelling sum
its own way). An exporter that changes what the module computes, or a runtime kernel that
does, fails it; a dtype whose rounding admits any output at the N(0, 1) inputs (mamba's
expanded scan in float32 or float16) is reported as not judged, which the CLI does not write
either.

The exporter turns a Python float scalar into a float32 constant cast to the tensor's dtype, so
a float64 module loses each such constant's last 29 bits; the generated `_chebyshev` therefore
keeps a surrogate's coefficients and interval as tensors in the activation's dtype.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from padre_compiler.backends.reference import run_graph
from padre_compiler.compiler import (
    as_spec,
    compile_module_class,
    construct,
    eager_class,
    generate,
    max_tokens,
)
from padre_compiler.errors import PadreError, first_line
from padre_compiler.ir.ops import EvalContext
from padre_compiler.spec.model import Spec
from padre_compiler.verify.certificate import float64_allowance
from padre_compiler.verify.fuzz import DTYPES as FUZZ_DTYPES
from padre_compiler.verify.fuzz import compare, ratio
from padre_compiler.verify.rounding import undecided

DTYPES = {name: FUZZ_DTYPES[name] for name in ("float32", "float16", "float64")}
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
    dynamic_tokens: bool  # read from the exported graph's input
    opset: int
    nodes: int

    def shapes(self) -> list[tuple[int, int]]:
        """(batch, tokens) of the N(0, 1) inputs `check_onnx` runs: batch 1 and 3, and with
        dynamic tokens a second length."""
        other = self.tokens
        if self.dynamic_tokens:
            other = self.tokens // 2 + 1 if self.tokens > 2 else self.tokens + 2
        return [(1, self.tokens), (3, other)]


@dataclass(frozen=True)
class OnnxCheck:
    passed: bool  # within the rule at every input
    judged: bool  # at the N(0, 1) inputs every element compared, the allowance < max|reference|
    error: float  # the worst relative error over the inputs run
    allowed: float  # its relative allowance
    twin_error: float  # the op-by-op graph's relative error at that input
    inputs: list[str]
    worst: str  # the input the figures are at
    message: str = ""  # a failure the numbers do not tell (a non-finite output)
    unjudged: tuple[str, ...] = ()  # inputs where some element was not compared (`compare`)

    @property
    def ok(self) -> bool:
        return self.passed and self.judged

    def line(self) -> str:
        if self.message:
            return f"onnxruntime {self.message}"
        verdict = "<=" if self.passed else ">"
        text = (f"onnxruntime at x {', '.join(self.inputs)}: max rel. error vs float64 reference "
                f"{self.error:.1e} {verdict} {self.allowed:.1e} at x {self.worst} (the fuzzer's "
                "rule, from the error of the spec lowered op by op in this dtype: "
                f"{self.twin_error:.1e})")
        if self.passed and not self.judged:
            text += ("; not judged: that error is as large as the output, or it overflows, so "
                     "any model would pass; export float64 to check this spec")
        elif self.unjudged:
            text += (f"; not compared in full at x {', '.join(self.unjudged)}, where the spec "
                     "lowered op by op is not finite (an eps below the dtype's range, or 0/0 "
                     "at eps = 0)")
        return text


def _require(*names: str) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            raise PadreError(f"ONNX export needs {name}: {INSTALL}") from None


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
    _require("onnx", "onnxscript")
    spec = as_spec(spec)
    if dtype not in DTYPES:
        raise PadreError(f"--dtype {dtype}: ONNX export takes {', '.join(DTYPES)}")
    if spec.layout == "grid2d":
        grid = grid or (14, 14)
        tokens = grid[0] * grid[1]
    result = generate(spec, dim=dim, grid=grid, tokens=tokens)
    graph = result.records[0].graph
    limits = max_tokens(graph)
    if limits and tokens > min(limits):
        raise PadreError(f"--tokens {tokens}: {spec.name}'s long filters have {min(limits)} "
                         f"taps; export at most {min(limits)} tokens")
    cls = compile_module_class(result)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = construct(cls, dim, grid).to(DTYPES[dtype]).eval()
    if weights is not None:
        _load_weights(module, weights, spec.name, dim, dtype,
                      lambda d: construct(cls, d, grid))
    shapes: dict[int, Any] = {0: torch.export.Dim("batch")}
    traced = tokens
    if spec.layout == "sequence" and not graph.find("long_conv"):
        shapes[1] = torch.export.Dim("tokens")
        traced = max(2, tokens)  # a length of 1 would be specialised to a constant
    x = torch.randn(2, traced, dim, dtype=DTYPES[dtype])
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, (x,), dynamo=True, input_names=["x"],
                                        output_names=["y"], dynamic_shapes=(shapes,),
                                        optimize=False, verbose=False)
    except Exception as err:  # the exporter's own errors are many types
        raise PadreError(f"{spec.name}: torch.onnx.export failed: {first_line(err)}") from None
    proto = program.model_proto
    proto.graph.name = spec.name
    proto.doc_string = (f"padre-compiler: {spec.name} ({spec.description}), dim {dim}, "
                        + (f"grid {grid[0]}x{grid[1]}" if grid else f"tokens {tokens}")
                        + f", {dtype}")
    dynamic = bool(proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return OnnxExport(proto.SerializeToString(), module, spec, dim, grid, tokens, dtype,
                      dynamic, opset, len(proto.graph.node))


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _width_of(shapes: dict[str, tuple[int, ...]], at_dim: Callable[[int], torch.nn.Module]
              ) -> int | None:
    """The width, among the sizes in `shapes`, at which the module has those shapes."""
    for d in sorted({n for shape in shapes.values() for n in shape}):
        try:
            with torch.device("meta"):  # shapes only: nothing allocated
                module = at_dim(d)
        except (PadreError, ValueError):  # not a width the spec takes
            continue
        if _shapes(module) == shapes:
            return d
    return None


def _load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], name: str,
                  dim: int, dtype: str, at_dim: Callable[[int], torch.nn.Module]) -> None:
    """Load a state dict of `name`'s module at `dim`, cast to `dtype`, or say what is wrong
    (and, where they are its weights at another width, which: `at_dim` builds the module)."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point()
               for k, v in weights.items()):
        raise PadreError("--weights: not a state dict of floating-point tensors "
                         "(torch.save(module.state_dict(), FILE) writes one)")
    want = _shapes(module)
    got = {k: tuple(v.shape) for k, v in weights.items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []) + [
            f"{k} is {list(got[k])}, not {list(want[k])}" for k in wrong]
        width = None if missing or extra else _width_of(got, at_dim)
        hint = f" (they are at --dim {width}: pass it)" if width is not None else ""
        raise PadreError(f"--weights: not {name}'s weights at dim {dim}: {'; '.join(parts)}"
                         f"{hint}")
    cast = {k: v.to(DTYPES[dtype]) for k, v in weights.items()}
    bad = [k for k, v in cast.items() if not torch.isfinite(v).all()]
    if bad:
        raise PadreError(f"--weights: {', '.join(bad)} not finite in {dtype} (NaN, inf, or "
                         "beyond its range); export another dtype or fix the weights")
    module.load_state_dict(cast)


def check_onnx(export: OnnxExport, model: bytes | None = None, seed: int = 1) -> OnnxCheck:
    """`model` (default: the export's own) in onnxruntime against the float64 reference on the
    export's weights, under the fuzzer's output rule (module docstring)."""
    _require("onnxruntime")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(model or export.model,
                                               providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        hint = (f"; onnxruntime's CPU kernels lack this op in {export.dtype}: export another "
                "dtype, or write the model unchecked (--no-check)"
                if "NOT_IMPLEMENTED" in str(err) else "")
        raise PadreError(f"{export.spec.name}: onnxruntime cannot load the {export.dtype} "
                         f"model: {first_line(err)}{hint}") from None
    graph = export.spec.graph()
    dtype = DTYPES[export.dtype]
    params = {k: v.detach() for k, v in export.module.state_dict().items()}
    twin = eager_class(graph, export.spec.name)
    twin = (twin(export.dim, export.grid) if export.grid else twin(export.dim)).to(dtype)
    twin.load_state_dict(params)
    rng = np.random.default_rng(seed)
    inputs = {f"[{b}, {n}]": rng.standard_normal((b, n, export.dim))
              for b, n in export.shapes()}
    zeros = f"[1, {export.tokens}] of zeros"
    inputs[zeros] = np.zeros((1, export.tokens, export.dim))
    rows = {}  # input -> its comparison
    params64 = {k: v.double().numpy() for k, v in params.items()}
    for shown, drawn in inputs.items():
        x = torch.tensor(drawn).to(dtype)
        rounded = x.double().numpy()
        with np.errstate(all="ignore"):
            ref = run_graph(graph, rounded, params64, EvalContext(grid=export.grid))
            held = undecided(graph, rounded, params64, dtype, EvalContext(grid=export.grid))
        try:
            (y,) = session.run(["y"], {"x": x.numpy()})
        except Exception as err:
            raise PadreError(f"{export.spec.name}: onnxruntime failed on x {shown}: "
                             f"{first_line(err)}") from None
        with torch.no_grad():
            twin_y = twin(x).double().numpy()
        c = compare(y.astype(np.float64), ref, twin_y, export.dtype, held)
        if export.dtype == "float64" and c.twin_error is not None:  # module docstring
            c = replace(c, allowed=max(c.allowed, float64_allowance(c.twin_error / c.scale)
                                       * c.scale) if c.scale else c.allowed)
        rows[shown] = c
    # the all-zero input is there for 0/0 (a dropped eps: a non-finite output); where the
    # output is 0 up to rounding (a surrogate's constant term), its own allowance is ~0 too:
    # it gets at least the N(0, 1) inputs' smallest, in absolute terms
    floor = min(c.allowed for k, c in rows.items() if k != zeros)
    rows[zeros] = replace(rows[zeros], allowed=max(rows[zeros].allowed, floor))
    shown, worst = max(rows.items(), key=lambda r: (not r[1].ok, r[1].judged, ratio(r[1])))
    scale = worst.scale or 1.0
    twin_error = math.inf if worst.twin_error is None else worst.twin_error
    return OnnxCheck(all(c.ok for c in rows.values()),
                     # judged at the N(0, 1) inputs: at the all-zero one the output may be zero
                     all(c.judged for k, c in rows.items() if k != zeros),
                     worst.error / scale, worst.allowed / scale, twin_error / scale, list(inputs),
                     shown, worst.message and f"at x {shown}, {worst.message}",
                     tuple(k for k, c in rows.items() if not c.whole))
