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

        keys = torch.zeros(1, 2, 40, 8)
        press = CAOTEPress(compression_ratio=0.5, base="snapkv", window_size=32)
        with pytest.warns(RecencyFallback, match="keeps 20 of 40 entries, no more than Snap"):
            scores = press.score(torch.nn.Module(), torch.zeros(1, 40, 16), keys, keys, None,
                                 {})
        assert scores.shape == (1, 2, 40)
        kept = scores.topk(20, dim=-1).indices.sort(dim=-1).values
        assert kept.tolist() == [[list(range(20, 40))] * 2]
    finally:
        sys.modules.pop("padre_compiler.caote.press", None)
