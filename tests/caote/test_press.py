"""CAOTEPress inside kvpress's own text-generation pipeline (skipped without kvpress)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("kvpress", reason="kvpress not installed (optional extra, kvpress==0.5.5)")
transformers = pytest.importorskip("transformers", reason="transformers not installed")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import pipeline  # noqa: E402

from padre_compiler.caote.press import CAOTEPress  # noqa: E402

WORDS = [
    "the", "a", "of", "to", "and", "in", "is", "that", "for", "it", "as", "with", "was", "on",
    "be", "by", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they",
    "you", "were", "her", "she", "there", "one", "all", "we", "can", "has", "been", "if", "more",
    "when", "will", "would", "who", "so", "no", "pass", "key", "number", "remember", "what",
]


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("base", ["h2o", "tova", "snapkv"])
@pytest.mark.parametrize("variant", ["caote", "fastcaote"])
def test_press_in_kvpress_pipeline(base: str, variant: str) -> None:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).eval()
    tok = tiny_tokenizer()
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok, device="cpu")
    context = " ".join(WORDS[i % len(WORDS)] for i in range(0, 300, 7))  # 43 words
    press = CAOTEPress(compression_ratio=0.5, base=base, variant=variant, window_size=8)
    cache = transformers.DynamicCache()
    out = pipe(context, question="what is the pass key number", press=press, cache=cache,
               max_new_tokens=4)
    assert isinstance(out["answer"], str)
    n_ctx = len(tok.encode(tok.bos_token + context, add_special_tokens=False))
    assert cache.get_seq_length() == int(n_ctx * 0.5)


def test_press_scores_protect_snapkv_window() -> None:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(cfg).eval()
    seen = {}
    press = CAOTEPress(compression_ratio=0.5, base="snapkv", window_size=8)
    orig = press.score

    def spy(*args, **kwargs):
        seen["s"] = orig(*args, **kwargs)
        return seen["s"]

    press.score = spy
    with press(model), torch.no_grad():
        model(torch.randint(0, 64, (1, 30)), past_key_values=transformers.DynamicCache())
    s = seen["s"]
    assert s.shape == (1, 2, 30)
    assert bool(torch.isinf(s[..., -8:]).all()) and bool(torch.isfinite(s[..., :-8]).all())


@pytest.mark.parametrize("field,value,message", [
    ("kernel_size", 4, "kernel_size must be an odd number >= 1, got 4"),
    ("kernel_size", 0, "kernel_size must be an odd number >= 1, got 0"),
    ("window_size", 0, "window_size must be at least 1"),
    ("pooling", "min", "pooling must be one of"),
    ("group", "sum", "group must be one of"),
    ("base", "lru", "base must be one of"),
])
def test_press_names_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CAOTEPress(**{"compression_ratio": 0.5, field: value})
