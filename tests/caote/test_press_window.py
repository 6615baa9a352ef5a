"""CAOTEPress's argument check, which runs without kvpress (a stand-in for its ScorerPress
where kvpress is not installed)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch


def test_a_snapkv_press_whose_window_holds_every_kept_entry_is_refused(monkeypatch) -> None:
    """kvpress keeps int(T (1 - ratio)) entries; where SnapKV's protected window holds them
    all, the scores decide nothing (the last entries were kept by tie order): refused."""
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
        from padre_compiler.caote.press import CAOTEPress

        keys = torch.zeros(1, 2, 40, 8)
        press = CAOTEPress(compression_ratio=0.5, base="snapkv", window_size=32)
        with pytest.raises(ValueError, match="keeps 20 of 40 entries, no more than SnapKV's"):
            press.score(torch.nn.Module(), torch.zeros(1, 40, 16), keys, keys, None, {})
    finally:
        sys.modules.pop("padre_compiler.caote.press", None)
