"""CAOTEPress.score: the short-prompt fallback and the window's protection, which run without
kvpress (a stand-in for its ScorerPress where kvpress is not installed)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch


def _stub_kvpress(monkeypatch) -> None:
    """kvpress's ScorerPress where kvpress is not installed; press.py imported afresh."""
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


def test_a_snapkv_press_whose_window_holds_every_kept_entry_keeps_the_most_recent(
        monkeypatch) -> None:
    """kvpress keeps int(T (1 - ratio)) entries; where SnapKV's protected window holds them
    all, the scores decide nothing: the most recent are kept, with a warning (a batch of
    prompts of mixed lengths goes on)."""
    _stub_kvpress(monkeypatch)
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


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_an_infinite_or_nan_score_never_displaces_the_snapkv_window(monkeypatch,
                                                                    bad: float) -> None:
    """CAOTE scores +inf where one query head puts its whole weight on a token; the press
    protected SnapKV's window with +inf too, so kvpress's top-k broke the tie by dropping a
    window entry (a NaN, above +inf in top-k, did so outright)."""
    transformers = pytest.importorskip("transformers")
    _stub_kvpress(monkeypatch)
    try:
        from padre_compiler.caote import press as press_mod

        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96,
                                       num_hidden_layers=1, num_attention_heads=4,
                                       num_key_value_heads=2)
        model = transformers.LlamaForCausalLM(cfg).eval()
        t, window = 12, 4
        hidden = torch.randn(1, t, 64)
        cos_sin = model.model.rotary_emb(hidden, torch.arange(t)[None])
        keys, values = torch.randn(1, 2, t, 16), torch.randn(1, 2, t, 16)
        caote = press_mod.VARIANTS["caote"]

        def scores(base, vals, group):
            s = caote(base, vals, group)
            s[..., [0, 4, 7]] = bad  # three candidates scored +inf (or NaN)
            return s

        monkeypatch.setitem(press_mod.VARIANTS, "caote", scores)
        press = press_mod.CAOTEPress(compression_ratio=1 - 6 / t, base="snapkv",
                                     window_size=window)
        with torch.no_grad():
            s = press.score(model.model.layers[0].self_attn, hidden, keys, values, None,
                            {"position_embeddings": cos_sin})
        kept = s.topk(6, dim=-1).indices  # kvpress's selection
        for row in kept.view(-1, 6).tolist():
            assert set(range(t - window, t)) <= set(row)
    finally:
        sys.modules.pop("padre_compiler.caote.press", None)
