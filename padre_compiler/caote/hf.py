"""Block-wise KV eviction on a Hugging Face transformers ``DynamicCache`` (true chunked prefill).

Protocol (caote-math.md §7): the prompt is fed in blocks of ``block_size`` tokens; in every layer
the block's queries attend to the already-compressed cache plus the block (causally), then the
layer's cache is cut back to ``budget`` entries per KV head. During decoding each new token makes
the cache ``budget + 1`` and one entry is evicted.

How α is obtained without eager attention: a forward hook on each ``self_attn`` module recomputes
the post-RoPE queries from the hook's ``hidden_states`` and ``position_embeddings``
(``q_proj`` → optional ``q_norm`` → RoPE; Llama/Mistral/Qwen2/Qwen3-style modules) and the
softmax over the cached keys, with a causal mask built from the *absolute* positions of the cached
entries. The model itself may run SDPA or flash attention.

Cache invariants: keys are cached post-RoPE, so kept keys need no re-rotation. Positions are passed
as explicit ``position_ids`` (absolute), while ``cache_position`` stays the model's default
(relative to the stored length), which keeps HF's causal mask correct after eviction. Every KV head
keeps the same number of entries, so one mask per forward serves all heads. Batch rows must share
positions (no left padding).

Full-attention layers only: a model whose cache has a sliding-window (or chunked) layer
(``config.sliding_window`` / ``attention_chunk_size`` with ``layer_types`` naming such layers, e.g.
Mistral, Gemma 2/3) is refused at construction, whatever the budget. Such a layer cuts itself to
its last ``sliding_window - 1`` entries and sizes the model's mask from every token ever fed, not
from the entries kept, so after the first eviction mask and cache disagree even when
budget + block_size fits inside the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn

from padre_compiler.caote.policy import VARIANTS, EvictionConfig, protected_mask, select_keep
from padre_compiler.caote.scores import expand_kv, h2o_scores, snapkv_scores, tova_scores

try:  # transformers is an optional dependency of padre_compiler.caote
    from transformers import DynamicCache
except ImportError:  # pragma: no cover - exercised only without transformers
    DynamicCache = None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """RoPE helper: (x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


# model types whose attention block_queries recomputes exactly (Llama-style: q_proj, an
# optional per-head q_norm, split-half RoPE over the whole head); tests run llama and mistral
LLAMA_STYLE = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def block_queries(module: nn.Module, hidden: torch.Tensor, cos: torch.Tensor,
                  sin: torch.Tensor) -> torch.Tensor:
    """Post-RoPE queries of a Llama-style attention module. hidden [B, Q, D] -> [B, Hq, Q, d]."""
    b, q_len, _ = hidden.shape
    q = module.q_proj(hidden).view(b, q_len, -1, module.head_dim).transpose(1, 2)
    if hasattr(module, "q_norm"):  # Qwen3 / Gemma3 QK-norm
        q = module.q_norm(q)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, Q, d]
    return q * cos + _rotate_half(q) * sin


def causal_attention(q: torch.Tensor, q_pos: torch.Tensor, keys: torch.Tensor,
                     key_pos: torch.Tensor, scaling: float) -> torch.Tensor:
    """fp32 softmax(q Kᵀ · scaling) with key j visible to query t iff key_pos[j] <= q_pos[t].

    q [B, Hq, Q, d]; q_pos [Q]; keys [B, Hkv, T, d]; key_pos [B, Hkv, T] -> [B, Hq, Q, T].
    """
    hq = q.shape[1]
    k = expand_kv(keys.float(), hq)  # [B, Hq, T, d]
    logits = torch.einsum("bhqd,bhtd->bhqt", q.float(), k) * scaling  # [B,Hq,Q,d]@[B,Hq,T,d]
    hidden = expand_kv(key_pos, hq).unsqueeze(2) > q_pos.view(1, 1, -1, 1)  # [B, Hq, Q, T]
    return logits.masked_fill(hidden, float("-inf")).softmax(-1)


@dataclass
class LayerState:
    positions: torch.Tensor | None = None  # [B, Hkv, T] absolute position of each cached entry
    h2o: torch.Tensor | None = None  # [B, Hq, T] accumulated attention (H2O)
    queries: torch.Tensor | None = None  # [B, Hq, ≤w, d] last w post-RoPE queries (SnapKV)
    query_pos: torch.Tensor | None = None  # [≤w]


@dataclass
class Timings:
    """Seconds spent per phase, summed over layers and calls."""

    attention_module: float = 0.0  # the model's own self_attn forward (projections included)
    recompute: float = 0.0  # α recomputation in the hook
    base: float = 0.0  # base score (H2O / TOVA / SnapKV)
    variant: float = 0.0  # CAOTE / FastCAOTE on top of the base (0 work for variant "none")
    select: float = 0.0  # top-k and gather
    events: int = 0  # eviction events (layer × forward call)


class BlockwiseEvictor:
    """Attach to a causal LM; run ``prefill``/``decode``/``generate`` with a bounded cache.

    ``config=None`` runs the same block-wise loop without eviction (the full-cache reference).
    ``record_outputs=True`` keeps every layer's attention-module output (post ``o_proj``,
    [B, L, D] per layer) for error measurements.
    """

    def __init__(self, model: nn.Module, config: EvictionConfig | None,
                 block_size: int | None = None, record_outputs: bool = False) -> None:
        if DynamicCache is None:
            raise ImportError("padre_compiler.caote.hf needs transformers (pinned 5.2.0)")
        layers = DynamicCache(config=model.config).layers
        sliding = sum(getattr(layer, "is_sliding", False) for layer in layers)
        if sliding:
            raise ValueError(
                f"BlockwiseEvictor needs full-attention layers, but {sliding} of the "
                f"{len(layers)} layers of this {model.config.model_type} model use "
                "sliding-window or chunked attention "
                "(config.sliding_window / attention_chunk_size / layer_types): their cache "
                "trims itself to the window and masks by tokens fed, not tokens kept, which "
                "eviction breaks; use a full-attention model or config "
                "(e.g. sliding_window=None)")
        kind = model.config.model_type
        if kind not in LLAMA_STYLE or getattr(model.config, "clip_qkv", None) or \
                getattr(model.config, "partial_rotary_factor", 1.0) != 1.0:
            raise ValueError(
                f"BlockwiseEvictor recomputes attention weights as Llama-style attention does "
                f"(split-half RoPE over the whole head, no q/k clipping), which this {kind} "
                f"model's attention is not known to be: its scores would use wrong weights; "
                f"the architectures it is checked on: {', '.join(sorted(LLAMA_STYLE))}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.model = model
        self.config = config
        self.block_size = block_size if block_size is not None else (
            config.block_size if config else 128)
        self.record_outputs = record_outputs
        self.attn_modules = [layer.self_attn for layer in _decoder_layers(model)]
        self.handles: list[Any] = []
        self.timings = Timings()
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.states = [LayerState() for _ in self.attn_modules]
        self.outputs: list[list[torch.Tensor]] = [[] for _ in self.attn_modules]
        self.next_position = 0
        self._positions = torch.zeros(0, dtype=torch.long)
        self._prefill = True
        self._t0: dict[int, float] = {}

    def __enter__(self) -> BlockwiseEvictor:
        if self.handles:
            raise RuntimeError("this BlockwiseEvictor is attached already (a `with` inside "
                               "its own `with`)")
        if getattr(self.model, "_padre_evictor", None) is not None:
            raise RuntimeError("another BlockwiseEvictor is attached to this model: leave its "
                               "`with` block first (two would evict each other's cache)")
        self.model._padre_evictor = self
        for i, m in enumerate(self.attn_modules):
            self.handles.append(m.register_forward_pre_hook(self._make_pre(i)))
            self.handles.append(m.register_forward_hook(self._make_post(i), with_kwargs=True))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.model._padre_evictor = None

    # ------------------------------------------------------------------ driving the model

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        """One model call on ids [B, Q] at the next absolute positions. Returns logits [B, Q, V]."""
        if not self.handles:  # the hooks that record and evict attach in __enter__
            raise RuntimeError("BlockwiseEvictor runs inside `with evictor:` (its hooks attach "
                               "there); outside it the model would run without eviction")
        q = ids.shape[1]
        if q == 0:
            raise ValueError("no tokens to feed: input_ids is [B, 0]")
        self._positions = torch.arange(self.next_position, self.next_position + q,
                                       device=ids.device)
        out = self.model(input_ids=ids, position_ids=self._positions.unsqueeze(0),
                         past_key_values=self.cache, use_cache=True)
        self.next_position += q
        return out.logits

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, extend: bool = False) -> torch.Tensor:
        """Block-wise prefill of input_ids [B, L]; returns logits [B, L, V]. A new sequence
        (cache, eviction states and recorded outputs reset), or with extend=True the
        continuation of the current one (its tokens at the next positions; its blocks start
        at the split, so eviction matches one prefill of the whole where the split falls on
        a block boundary)."""
        if not input_ids.shape[1]:
            raise ValueError("an empty prompt: input_ids is [B, 0]")
        if not extend:
            self.reset()
        self._prefill = True
        logits = [self._forward(input_ids[:, s:s + self.block_size])
                  for s in range(0, input_ids.shape[1], self.block_size)]
        return torch.cat(logits, dim=1)

    @torch.no_grad()
    def decode(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed generated tokens [B, Q] (usually Q = 1) one call at a time; logits [B, Q, V]."""
        self._prefill = False
        return self._forward(token_ids)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int,
                 eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy generation with eviction from the prompt input_ids [B, L] (a new sequence,
        as `prefill`); returns the new tokens [B, ≤ max_new_tokens]."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens} (a "
                             "prompt without generation is `prefill`)")
        logits = self.prefill(input_ids)[:, -1]
        new = []
        for step in range(max_new_tokens):
            tok = logits.argmax(-1, keepdim=True)  # [B, 1]
            new.append(tok)
            done = eos_token_id is not None and bool((tok == eos_token_id).all())
            if done or step == max_new_tokens - 1:
                break
            logits = self.decode(tok)[:, -1]
        return torch.cat(new, dim=1)

    def cache_lengths(self) -> list[int]:
        return [layer.keys.shape[-2] for layer in self.cache.layers]

    # ------------------------------------------------------------------ hooks

    def _make_pre(self, i: int):
        def pre(module: nn.Module, args: tuple) -> None:
            self._t0[i] = time.perf_counter()
        return pre

    def _make_post(self, i: int):
        def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            self.timings.attention_module += time.perf_counter() - self._t0.pop(i)
            if self.record_outputs:
                self.outputs[i].append(output[0].detach())
            self._after_attention(i, module, kwargs)
            return output
        return post

    def _after_attention(self, i: int, module: nn.Module, kwargs: dict) -> None:
        cfg, st = self.config, self.states[i]
        layer = self.cache.layers[i]
        keys, values = layer.keys, layer.values  # [B, Hkv, T, d], T = old + Q
        b, hkv, t, _ = keys.shape
        pos = self._positions.to(keys.device)  # [Q]
        new_pos = pos.view(1, 1, -1).expand(b, hkv, -1)
        st.positions = new_pos if st.positions is None else torch.cat([st.positions, new_pos], -1)
        if cfg is None:
            return
        over = t > cfg.budget and (self._prefill or cfg.decode)
        need_h2o = cfg.base == "h2o"
        if not over and not need_h2o and cfg.base != "snapkv":
            return

        tic = time.perf_counter()
        cos, sin = kwargs["position_embeddings"]
        q = block_queries(module, kwargs["hidden_states"], cos, sin)  # [B, Hq, Q, d]
        hq = q.shape[1]
        if cfg.base == "snapkv":  # keep the last w queries as the observation window
            st.queries = q if st.queries is None else torch.cat([st.queries, q], 2)
            st.query_pos = pos if st.query_pos is None else torch.cat([st.query_pos, pos])
            st.queries = st.queries[:, :, -cfg.snapkv_window:]
            st.query_pos = st.query_pos[-cfg.snapkv_window:]
            q, qp = st.queries, st.query_pos
        elif cfg.base == "tova":
            q, qp = q[:, :, -1:], pos[-1:]
        else:
            qp = pos
        if not over and not need_h2o:
            return
        attn = causal_attention(q, qp, keys, st.positions, module.scaling)  # [B, Hq, Q', T]
        self.timings.recompute += time.perf_counter() - tic

        tic = time.perf_counter()
        if need_h2o:  # H2O: votes accumulate across blocks and decoding steps
            old = st.h2o if st.h2o is not None else attn.new_zeros(b, hq, 0)
            old = torch.cat([old, attn.new_zeros(b, hq, t - old.shape[-1])], -1)
            st.h2o = old + h2o_scores(attn)
            base = st.h2o
        elif cfg.base == "tova":
            base = tova_scores(attn)
        else:
            base = snapkv_scores(attn, cfg.snapkv_window, cfg.snapkv_kernel, cfg.snapkv_pooling)
        self.timings.base += time.perf_counter() - tic
        if not over:
            return

        tic = time.perf_counter()
        score = VARIANTS[cfg.variant](base, values, cfg.group)  # [B, Hkv, T]
        self.timings.variant += time.perf_counter() - tic

        tic = time.perf_counter()
        newest = int(pos[-1])
        prot = protected_mask(st.positions, newest, cfg.sink, cfg.protected_recent)
        keep = select_keep(score, prot, cfg.budget)  # [B, Hkv, budget]
        idx = keep.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        layer.keys = keys.gather(2, idx).contiguous()
        layer.values = values.gather(2, idx).contiguous()
        st.positions = st.positions.gather(2, keep)
        if st.h2o is not None:  # [B, Hq, T] follows its KV head's selection
            st.h2o = st.h2o.gather(2, expand_kv(keep, hq))
        self.timings.select += time.perf_counter() - tic
        self.timings.events += 1


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    inner = model.model if hasattr(model, "model") else model
    if hasattr(inner, "language_model"):
        inner = inner.language_model
    return list(inner.layers)
