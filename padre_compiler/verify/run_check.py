"""`padre compile --run`: a compiled module on one random float32 batch, against the float64
reference, and where it is off, whether float32 rounding explains it.

The judge is the spec's graph lowered op by op (the eager twin, no passes) on the same input
and weights. Where the twin's float32 error is small, a module within twice it (plus 4 ulp:
the fuzzer's rule) computes the spec up to rounding, and one further off, or non-finite where
the twin is finite, does not. Where float32 loses the spec (mamba's expanded scan cancels to
an error of ~1e7), both run again in float64, under the code certificate's rule. Elements
downstream of a normalisation float32 cannot decide are held to the rounding bound instead
(padre_compiler.verify.rounding, as the fuzzer holds them).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from padre_compiler.backends.reference import run_graph
from padre_compiler.compiler import Compiled, compile_module_class, construct, eager_class
from padre_compiler.ir.ops import EvalContext
from padre_compiler.verify.certificate import float64_allowance
from padre_compiler.verify.fuzz import twin_allowance
from padre_compiler.verify.rounding import undecided

TOLERANCE = 1e-4  # relative float32 error above which the eager twin judges the module
INFORMATIVE = 1e-2  # the twin's float32 error below which float32 can judge at all
TWIN = "the spec lowered op by op"
WRONG = "the module is wrong (please report it with this command)"


@dataclass(frozen=True)
class RunCheck:
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    ms: float
    error: float  # max |y - reference| / max |reference| (NaN where y is not finite)
    kernels: str | None  # a Triton module: what ran its fused regions
    verdict: str | None  # where error > TOLERANCE: rounding or not, and why

    @property
    def wrong(self) -> bool:
        """The module does not compute the spec (rounding does not explain its error)."""
        return self.verdict is not None and self.verdict.endswith(WRONG)

    def lines(self) -> list[str]:
        out = [f"run            x {self.x_shape} -> y {self.y_shape} in {self.ms:.1f} ms; "
               f"max rel. error vs float64 reference {self.error:.1e}"]
        if self.kernels:
            out.append(f"kernels        {self.kernels}")
        if self.verdict:
            out.append(f"check          {self.verdict}")
        return out


def run_check(result: Compiled, dim: int, grid: tuple[int, int] | None, tokens: int,
              seed: int = 0) -> RunCheck:
    """Build `result`'s module at `dim`, run it on a [2, tokens, dim] N(0, 1) batch on the CPU
    and check it against the float64 reference interpreter."""
    module = construct(compile_module_class(result), dim, grid)
    x = torch.randn(2, tokens, dim, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    with torch.no_grad():
        y = module(x)
    ms = (time.perf_counter() - t0) * 1e3
    graph = result.spec.graph()
    x64 = x.double().numpy()
    params64 = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    ref = run_graph(graph, x64, params64, EvalContext(grid=grid))
    # as the fuzzer's rule: elements a normalisation leaves undecided in float32 are held to
    # the rounding bound, not to the twin
    held = undecided(graph, x64, params64, torch.float32, EvalContext(grid=grid))
    decided = np.ones(ref.shape, bool) if held is None else ~held.mask
    scale = max(float(np.abs(ref[decided]).max(initial=0.0)), 1e-300)

    def error(out: torch.Tensor) -> float:  # relative; NaN where out is not finite
        diff = np.abs(out.double().numpy() - ref)[decided]
        return float(diff.max(initial=0.0)) / scale if np.isfinite(diff).all() else math.nan

    rel = error(y)
    verdict = None
    beyond = 0 if held is None else int(held.beyond(y.double().numpy(), ref).sum())
    if beyond:
        verdict = (f"{beyond} output element(s) downstream of a normalisation float32 cannot "
                   f"decide are off the reference by more than the rounding bound: {WRONG}")
    elif not rel <= TOLERANCE:  # NaN included
        twin = construct(eager_class(result.spec.graph(), result.spec.name), dim, grid)
        twin.load_state_dict(module.state_dict())
        verdict = judge(module, twin, x, y, error, scale, result.backend == "triton")
    kernels = kernels_run(type(module), x) if result.backend == "triton" else None
    return RunCheck(tuple(x.shape), tuple(y.shape), ms, rel, kernels, verdict)


def judge(module: torch.nn.Module, twin: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
          error: Callable[[torch.Tensor], float], scale: float, triton: bool) -> str:
    """Whether the module's float32 output y is the spec up to rounding. Where the twin's own
    float32 error is small, by the fuzzer's rule (`twin_allowance`); where float32 carries no
    information (the twin off by INFORMATIVE or more, or overflowing), in float64 by the code
    certificate's (within 1e-10 or 4x the twin's error)."""
    with torch.no_grad():
        twin_rel = error(twin(x))
    rel = error(y)
    if twin_rel < INFORMATIVE:
        eps = torch.finfo(torch.float32).eps
        if not rel * scale <= twin_allowance(twin_rel * scale, eps, scale):
            return f"{TWIN} is off by {twin_rel:.1e} in float32: {WRONG}"
        return (f"{TWIN} is off by {twin_rel:.1e} in float32 too: the error is rounding, "
                "amplified by this polynomial's conditioning")
    with torch.no_grad():
        rel64 = error(module.double()(x.double()))
        twin64 = error(twin.double()(x.double()))
    lost = "overflows" if math.isnan(twin_rel) else f"is off by {twin_rel:.1e}"
    found = (f"float32 cannot tell ({TWIN} {lost} in float32); in float64 the module is off "
             f"by {rel64:.1e} and {TWIN} by {twin64:.1e}")
    if triton:
        found += " (float64 runs the Triton kernels' naive twins)"
    if rel64 <= float64_allowance(twin64):
        return f"{found}: rounding (run it in float64)"
    return f"{found}: {WRONG}"


TWINS = "their naive PyTorch twins"


def kernels_run(cls: type, x: torch.Tensor) -> str:
    """What runs the fused regions of a Triton module class on x: its kernels or (a string
    starting with TWINS) their naive twins."""
    generated = sys.modules[cls.__module__]
    if not hasattr(generated, "_use_triton"):
        return "none: every op of this spec runs in torch (the source's header says why)"
    if generated.triton is None:
        return f"{TWINS}: Triton is not installed (pip install 'padre-compiler[triton]')"
    if generated._use_triton(x):
        return f"Triton's, on {x.device}" if x.is_cuda else \
            "Triton's, in its CPU interpreter (TRITON_INTERPRET=1)"
    return (f"{TWINS}: the Triton kernels run on a CUDA device, or on the CPU in Triton's "
            "interpreter with TRITON_INTERPRET=1 set before the module loads (slow)")
