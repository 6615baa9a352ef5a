"""CAOTEPress's short-prompt fallback, which runs without kvpress (a stand-in for its ScorerPress
where kvpress is not installed)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch


def test_a_snapkv_press_whose_window_holds_every_kept_entry_keeps_the_most_recent(
        monkeypatch) -> None:
    """kvpress keeps int(T (1 - ratio)) entries; where SnapKV's protected window holds them
    all, the scores decide nothing: the most recent are kept, with a warning (a batch of
    prompts of mixed lengths goes on)."""
    try:
        import kvpress  # noqa: F401
    except ImportError:
        stub = types.ModuleType("kvpress")

        @dataclass
        class ScorerPress:
            compression_ratio: float = 0.0

            def __post_init__(self) -> None:
                pass

        stub.ScorerPress = ScorerPress
        monkeypatch.setitem(sys.modules, "kvpress", stub)
        monkeypatch.delitem(sys.modules, "padre_compiler.caote.press", raising=False)
    try:
        from padre_compiler.caote.press import CAOTEPress, RecencyFallback

        for t, dtype in ((40, torch.float32), (1000, torch.bfloat16)):  # bf16 ties past 256
            keys = torch.zeros(1, 2, t, 8, dtype=dtype)
            press = CAOTEPress(compression_ratio=1 - 20 / t, base="snapkv", window_size=32)
            with pytest.warns(RecencyFallback, match=f"keeps 20 of {t} entries, no more than"):
                scores = press.score(torch.nn.Module(), torch.zeros(1, t, 16), keys, keys,
                                     None, {})
            assert scores.shape == (1, 2, t)
            kept = scores.topk(20, dim=-1).indices.sort(dim=-1).values
            assert kept.tolist() == [[list(range(t - 20, t))] * 2]
    finally:
        sys.modules.pop("padre_compiler.caote.press", None)
