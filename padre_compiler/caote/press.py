"""kvpress-compatible CAOTE press (optional extra: needs ``kvpress==0.5.5``).

``CAOTEPress`` is a kvpress ``ScorerPress``: kvpress calls ``score`` once per attention layer after
the prefill forward and keeps the top ``(1 - compression_ratio)`` entries per KV head. Differences
from the paper protocol (use ``BlockwiseEvictor`` for that): one-shot compression after a full
prefill (no blocks), a ratio instead of an absolute budget, no decoding-time eviction.

Scores are computed per query head from recomputed window attention (works with SDPA/flash; no
eager attention needed), normalised over the whole cache *before* protection, and reduced per KV
head like ``scores.caote_scores``. SnapKV's observation window is protected by setting its final
score to +inf afterwards, never by padding the base scores (kvpress's ``max + 1`` padding would
corrupt h^norm and the pseudo-output). Where the ratio keeps no more entries than that window,
the scores decide nothing: the most recent entries are kept, with a ``RecencyFallback`` warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from kvpress import ScorerPress
from torch import nn

from padre_compiler.caote.hf import block_queries, causal_attention
from padre_compiler.caote.policy import BASES, VARIANTS, below_protected, check_choice
from padre_compiler.caote.scores import (
    GROUP_REDUCES,
    check_snapkv,
    h2o_scores,
    snapkv_scores,
    tova_scores,
)


class RecencyFallback(UserWarning):
    """A SnapKV press whose ratio keeps no more than its protected window kept the most
    recent entries, unscored."""


@dataclass
class CAOTEPress(ScorerPress):
    """CAOTE / FastCAOTE meta-policy over H2O, TOVA or SnapKV (variant "none" = the base alone).

    compression_ratio: fraction of the cache evicted (kvpress convention).
    base: "h2o" (attention summed over all prefill queries: O(L²) memory), "tova" (last query),
    "snapkv" (last ``window_size`` queries, summed, ``pooling`` over ``kernel_size``).
    """

    compression_ratio: float = 0.0
    base: str = "snapkv"
    variant: str = "caote"
    window_size: int = 32
    kernel_size: int = 7
    pooling: str = "max"
    group: str = "rss"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("base", self.base, BASES)
        check_choice("variant", self.variant, tuple(VARIANTS))
        check_choice("group", self.group, GROUP_REDUCES)
        check_snapkv(self.window_size, self.kernel_size, self.pooling,
                     ("window_size", "kernel_size", "pooling"))

    def score(self, module: nn.Module, hidden_states: torch.Tensor, keys: torch.Tensor,
              values: torch.Tensor, attentions: torch.Tensor | None, kwargs: dict[str, Any]
              ) -> torch.Tensor:
        """[B, Hkv, T] scores, higher = keep (CAOTE error of evicting the entry)."""
        b, hkv, t, _ = keys.shape
        kept = int(t * (1 - self.compression_ratio))  # kvpress's count of the kept entries
        if self.base == "snapkv" and kept <= self.window_size:
            # every kept entry lies in the protected window: SnapKV keeps the most recent
            warnings.warn(
                f"CAOTEPress(base='snapkv'): the ratio keeps {kept} of {t} entries, no more "
                f"than SnapKV's protected window of {self.window_size}, so the most recent "
                f"{kept} are kept and no score is computed; give a smaller window_size or "
                "compression_ratio, or a longer prompt, for the scores to decide",
                RecencyFallback, stacklevel=2)
            # positions in float32, exact to 2**24 (bfloat16 ties them past 256)
            return torch.arange(t, dtype=torch.float32, device=keys.device).expand(b, hkv, t)
        n_q = {"h2o": hidden_states.shape[1], "tova": 1, "snapkv": self.window_size}[self.base]
        n_q = min(n_q, hidden_states.shape[1])
        cos, sin = kwargs["position_embeddings"]
        q = block_queries(module, hidden_states[:, -n_q:], cos[:, -n_q:], sin[:, -n_q:])
        key_pos = torch.arange(t, device=keys.device).view(1, 1, t).expand(b, hkv, t)
        q_pos = torch.arange(t - n_q, t, device=keys.device)
        attn = causal_attention(q, q_pos, keys, key_pos, module.scaling)  # [B, Hq, n_q, T]
        if self.base == "h2o":
            base = h2o_scores(attn)
        elif self.base == "tova":
            base = tova_scores(attn)
        else:
            base = snapkv_scores(attn, self.window_size, self.kernel_size, self.pooling)
        # kvpress keeps the top-k, beneath the protected window's +inf
        scores = below_protected(VARIANTS[self.variant](base, values, self.group))
        if self.base == "snapkv":  # SnapKV keeps its observation window
            scores[..., -n_q:] = float("inf")
        return scores
