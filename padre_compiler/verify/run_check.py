"""`padre compile --run`: a compiled module on one random float32 batch, against the float64
reference, and where it is off, whether float32 rounding explains it.

The judge is the fuzzer's: the spec's graph lowered op by op (the eager twin, no passes) in
float32 on the same input and weights. A compiled module within twice the twin's error (plus
4 ulp) computes the spec up to rounding; one further off, or non-finite where the twin is
finite, does not.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from padre_compiler.backends.reference import run_graph
from padre_compiler.compiler import Compiled
from padre_compiler.compiler import compile as compile_spec
from padre_compiler.ir.ops import EvalContext
from padre_compiler.verify.fuzz import eager_twin

TOLERANCE = 1e-4  # relative float32 error above which the eager twin judges the module


@dataclass(frozen=True)
class RunCheck:
    shape: tuple[int, ...]
    ms: float
    error: float  # max |y - reference| / max |reference| (NaN where y is not finite)
    kernels: str | None  # a Triton module: what ran its fused regions
    verdict: str | None  # where error > TOLERANCE: rounding or not, and why

    def lines(self) -> list[str]:
        out = [f"run            x {self.shape} -> y {self.shape} in {self.ms:.1f} ms; "
               f"max rel. error vs float64 reference {self.error:.1e}"]
        if self.kernels:
            out.append(f"kernels        {self.kernels}")
        if self.verdict:
            out.append(f"op by op       {self.verdict}")
        return out


def run_check(result: Compiled, dim: int, grid: tuple[int, int] | None, tokens: int,
              seed: int = 0) -> RunCheck:
    """Build `result`'s module at `dim`, run it on a [2, tokens, dim] N(0, 1) batch on the CPU
    and check it against the float64 reference interpreter."""
    module = compile_spec(result.spec, dim=dim, grid=grid, backend=result.backend)
    x = torch.randn(2, tokens, dim, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    with torch.no_grad():
        y = module(x)
    ms = (time.perf_counter() - t0) * 1e3
    weights = module.state_dict()
    ref = run_graph(result.spec.graph(), x.double().numpy(),
                    {k: v.detach().double().numpy() for k, v in weights.items()},
                    EvalContext(grid=grid))
    scale = max(float(np.abs(ref).max()), 1e-300)

    def error(out: torch.Tensor) -> float:
        return float(np.abs(out.double().numpy() - ref).max()) / scale

    rel = error(y)
    verdict = None
    if not rel <= TOLERANCE:  # NaN included
        twin = eager_twin(result.spec)(dim, grid) if grid else eager_twin(result.spec)(dim)
        twin.load_state_dict(weights)
        with torch.no_grad():
            twin_y = twin(x)
        verdict = judge(y, rel, twin_y, error(twin_y))
    kernels = kernels_run(module, x) if result.backend == "triton" else None
    return RunCheck(tuple(x.shape), ms, rel, kernels, verdict)


def judge(y: torch.Tensor, rel: float, twin_y: torch.Tensor, twin_rel: float) -> str:
    """Whether the module's float32 error `rel` is rounding, given its eager twin's."""
    twin = "the spec lowered op by op in float32"
    wrong = "the module is wrong (please report it with this command)"
    if not torch.isfinite(y).all():
        if torch.isfinite(twin_y).all():
            return f"{twin} is finite (error {twin_rel:.1e}) where the module is not: {wrong}"
        return f"{twin} overflows too: the values pass float32's range (run it in float64)"
    if rel <= 2 * twin_rel + 4 * torch.finfo(torch.float32).eps:
        return (f"{twin} is as far off ({twin_rel:.1e}): the error is rounding, amplified by "
                "this polynomial's conditioning (run it in float64)")
    return f"{twin} is off by {twin_rel:.1e} only: {wrong}"


def kernels_run(module: torch.nn.Module, x: torch.Tensor) -> str:
    """What ran a Triton module's fused regions on x: its kernels or their naive twins."""
    generated = sys.modules[type(module).__module__]
    if not hasattr(generated, "_use_triton"):
        return "none: every op of this spec runs in torch (the source's header says why)"
    if generated.triton is None:
        return ("their naive PyTorch twins: Triton is not installed "
                "(pip install 'padre-compiler[triton]')")
    if generated._use_triton(x):
        return "Triton's, in its CPU interpreter (TRITON_INTERPRET=1)"
    return ("their naive PyTorch twins: the Triton kernels run on a CUDA device, or on the CPU "
            "in Triton's interpreter with TRITON_INTERPRET=1 (slow)")
