"""Helpers shared by tests: compile a spec with given float64 parameters, compare outputs."""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np
import pytest
import torch

import padre_compiler as pc
from padre_compiler.backends.reference import random_params, run_graph
from padre_compiler.ir.ops import EvalContext


def compiled_with(spec, dim: int, grid, params: dict[str, np.ndarray]) -> torch.nn.Module:
    module = pc.compile(spec, dim=dim, grid=grid).double()
    module.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    return module


def reference(graph, x: np.ndarray, params, grid) -> np.ndarray:
    return run_graph(graph, x, params, EvalContext(grid=grid))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def random_case_inputs(case, seed: int = 0, batch: int = 2):
    params = random_params(case.spec.param_decls(), case.dim, seed=seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, case.tokens, case.dim))
    return params, x


def generated_runtime(name: str, dim: int, grid: tuple[int, int] | None = None) -> ModuleType:
    """The generated Triton module of `name` (its kernels, launchers and naive twins; a 2-D
    spec compiled for `grid`); the calling test skips where Triton is not installed."""
    module = pc.compile(name, dim=dim, backend="triton", grid=grid)
    m = sys.modules[type(module).__module__]
    if m.triton is None:
        pytest.skip("Triton is not installed")
    return m


def scale_run_check_modules(monkeypatch, factor: float) -> None:
    """`padre compile --run`'s module (run_check.compile_module_class) returns `factor` times
    its output: a module the run check must find wrong."""
    from padre_compiler.verify import run_check

    real = run_check.compile_module_class

    def scaled(result) -> type:
        class Scaled(real(result)):
            def forward(self, x):
                return factor * super().forward(x)

        return Scaled

    monkeypatch.setattr(run_check, "compile_module_class", scaled)
