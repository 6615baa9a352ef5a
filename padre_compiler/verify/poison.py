"""NaN-poisoned allocations: a kernel that reads an output or scratch element it never wrote
returns NaN instead of silently passing with stale memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

_PATCHED = ("empty", "empty_like")


@contextlib.contextmanager
def nan_poisoned() -> Iterator[None]:
    """Within the block, torch.empty, torch.empty_like and Tensor.new_empty fill floating
    tensors with NaN."""
    originals = {name: getattr(torch, name) for name in _PATCHED}
    new_empty = torch.Tensor.new_empty

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def wrap(fn: Any) -> Any:
        return lambda *a, **k: poison(fn(*a, **k))

    try:
        for name, fn in originals.items():
            setattr(torch, name, wrap(fn))
        torch.Tensor.new_empty = lambda self, *a, **k: poison(new_empty(self, *a, **k))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        torch.Tensor.new_empty = new_empty
