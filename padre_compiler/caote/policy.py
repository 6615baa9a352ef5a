"""Eviction policy: configuration, score dispatch table and budgeted top-k selection.

Independent of any model library; ``hf.py`` drives it from a transformers cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, get_args

import torch

from padre_compiler.caote.kernel import evictor_scorer
from padre_compiler.caote.scores import (
    GROUP_REDUCES,
    GroupReduce,
    Pooling,
    base_scores_per_kv,
    caote_scores,
    check_snapkv,
    fastcaote_scores,
)

Base = Literal["h2o", "tova", "snapkv"]
Variant = Literal["none", "caote", "fastcaote"]
BASES: tuple[str, ...] = get_args(Base)

# variant -> (base [B, Hq, T], values [B, Hkv, T, d], group) -> eviction score [B, Hkv, T];
# the CAOTE norms run as one Triton kernel on CUDA tensors (kernel.evictor_scorer)
VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor, GroupReduce], torch.Tensor]] = {
    "none": lambda base, values, group: base_scores_per_kv(base, values.shape[1]),
    # h/(1-h)·‖V hᵀ - v_j‖, h = f_norm(base)
    "caote": partial(caote_scores, scorer=evictor_scorer(fast=False)),
    # h/(1-h)·‖v̄ - v_j‖
    "fastcaote": partial(fastcaote_scores, scorer=evictor_scorer(fast=True)),
}


@dataclass(frozen=True)
class EvictionConfig:
    """Block-wise eviction settings (caote-math.md §7).

    budget: cached tokens kept per KV head and layer after each eviction event.
    base / variant: base method and CAOTE meta-policy ("none" = the base alone).
    block_size: prefill chunk; the cache briefly holds budget + block_size entries.
    sink: the first ``sink`` positions are never evicted. recent: nor the last ``recent``.
    SnapKV always keeps its observation window (recent is raised to ``snapkv_window``).
    group: how per-query-head CAOTE scores become per-KV-head scores (see ``scores.py``).
    decode: keep evicting one token per generated token once the cache is over budget.
    """

    budget: int
    base: Base = "tova"
    variant: Variant = "caote"
    block_size: int = 128
    sink: int = 0
    recent: int = 0
    snapkv_window: int = 32
    snapkv_kernel: int = 7
    snapkv_pooling: Pooling = "max"
    group: GroupReduce = "rss"
    decode: bool = True

    def __post_init__(self) -> None:
        check_choice("base", self.base, BASES)
        check_choice("variant", self.variant, tuple(VARIANTS))
        check_choice("group", self.group, GROUP_REDUCES)
        for name in ("budget", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("sink", "recent"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (tokens never evicted), "
                                 f"got {getattr(self, name)}")
        check_snapkv(self.snapkv_window, self.snapkv_kernel, self.snapkv_pooling,
                     ("snapkv_window", "snapkv_kernel", "snapkv_pooling"))
        if self.sink + self.protected_recent >= self.budget:
            window = (f" (SnapKV keeps its snapkv_window of {self.snapkv_window})"
                      if self.base == "snapkv" else "")
            raise ValueError(
                f"budget {self.budget} must exceed the tokens always kept, sink {self.sink} + "
                f"recent {self.protected_recent}{window}; give a budget above "
                f"{self.sink + self.protected_recent} or protect fewer tokens")

    @property
    def protected_recent(self) -> int:
        return max(self.recent, self.snapkv_window) if self.base == "snapkv" else self.recent

    @property
    def name(self) -> str:
        base = {"h2o": "H2O", "tova": "TOVA", "snapkv": "SnapKV"}[self.base]
        suffix = {"none": "", "caote": "+CAOTE", "fastcaote": "+FastCAOTE"}[self.variant]
        return base + suffix


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def protected_mask(positions: torch.Tensor, newest: int, sink: int, recent: int) -> torch.Tensor:
    """Bool [B, Hkv, T]: position < sink, or position > newest - recent."""
    return (positions < sink) | (positions > newest - recent)


def below_protected(scores: torch.Tensor) -> torch.Tensor:
    """scores in float32 as a top-k ranks them beneath protected entries, which are +inf: a
    NaN score (a cache that overflowed) last, as topk ranks NaN above +inf; an unprotected
    +inf (CAOTE's score of a token holding a query head's whole weight) as the largest finite
    float32, since at +inf it tied the protected and topk broke the tie by evicting one."""
    return scores.float().nan_to_num(nan=float("-inf"), posinf=torch.finfo(torch.float32).max,
                                     neginf=float("-inf"))


def select_keep(scores: torch.Tensor, protected: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices [B, Hkv, budget] of the kept entries, ascending (cache order preserved).

    scores [B, Hkv, T], higher = keep; protected entries are kept first (their score -> +inf,
    strictly above every unprotected one: below_protected). Protection masks the final score
    only: it never pads the base scores that CAOTE normalises.
    """
    s = below_protected(scores).masked_fill(protected, float("inf"))
    return s.topk(budget, dim=-1).indices.sort(dim=-1).values
