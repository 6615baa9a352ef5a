"""Shared test configuration: hypothesis profiles and small helpers."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# Without a GPU the generated Triton kernels run in Triton's CPU interpreter, which must be
# switched on before any @triton.jit decorator runs: here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests run small tensors: one thread avoids OpenMP synchronisation costs (and nondeterminism)
torch.set_num_threads(1)

# ci: reproducible and bounded (the default); dev: more examples, random seeds.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
