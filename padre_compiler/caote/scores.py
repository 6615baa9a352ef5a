"""Eviction scores: base methods (H2O, TOVA, SnapKV) and the CAOTE / FastCAOTE meta-policy.

Vectorised PyTorch; the float64 loop twin with the same names lives in ``naive.py``.

Conventions (all functions):

- ``attn``    [B, Hq, Q, T]  attention weights of Q queries over the T cached tokens, rows sum to 1
                             over the keys each query can see (masked entries are exactly 0).
- ``values``  [B, Hkv, T, d] cached values; query head ``h`` reads KV head ``h // G`` with
                             ``G = Hq // Hkv`` (the layout of HF's ``repeat_kv``).
- base scores [B, Hq, T]     one row per *query* head, non-negative, higher = more important.
- eviction scores [B, Hkv, T] one row per *KV* head (what a cache can evict), lower = evict first.

CAOTE (caote-math.md §2, §4): with ``h`` a weight vector summing to 1 over the cache and
``o = Σ_l h_l v_l``, evicting token j moves the output by ``h_j/(1-h_j) · (v_j - o)``, so
``c_j = h_j/(1-h_j) · ‖o - v_j‖₂`` is the exact error norm when ``h`` is the true attention.

GQA (caote-math.md §6): one KV entry serves the G query heads of its group. The concatenated
pre-``W_O`` output change of the group is ``Δ = concat_h Δ_h``, so ``‖Δ‖² = Σ_h c_{h,j}²`` exactly.
CAOTE scores are therefore computed per query head and reduced with the root-sum-of-squares
(``reduce_group(..., "rss")``); plain base scores are reduced with the mean over the group, the
convention of kvpress and of SnapKV (issue #22) — for ranking, mean and sum are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

GroupReduce = Literal["rss", "mean", "max"]
Pooling = Literal["max", "avg"]
GROUP_REDUCES: tuple[str, ...] = get_args(GroupReduce)
POOLINGS: tuple[str, ...] = get_args(Pooling)

# --------------------------------------------------------------------------- helpers


def expand_kv(x: torch.Tensor, n_q_heads: int) -> torch.Tensor:
    """[B, Hkv, ...] -> [B, Hq, ...]; query head h reads KV head h // G (HF ``repeat_kv``)."""
    group = n_q_heads // x.shape[1]
    return x.repeat_interleave(group, dim=1)


def reduce_group(scores: torch.Tensor, n_kv_heads: int, how: GroupReduce = "rss") -> torch.Tensor:
    """[B, Hq, T] -> [B, Hkv, T] over the G = Hq/Hkv query heads of each KV group.

    ``rss``: sqrt(Σ_h s_h²), exact group error norm when s_h are per-head CAOTE errors (pre-W_O).
    ``mean``: base-score convention (kvpress, SnapKV #22). ``max``: worst head.
    """
    b, hq, t = scores.shape
    grouped = scores.view(b, n_kv_heads, hq // n_kv_heads, t)  # [B, Hkv, G, T]
    if how == "rss":  # squares in float64: an fp32 s_h below ~1e-19 would square to 0
        return grouped.double().pow(2).sum(2).sqrt().to(scores.dtype)
    if how == "mean":
        return grouped.mean(2)
    if how == "max":
        return grouped.amax(2)
    raise ValueError(f"unknown group reduction {how!r}; expected one of {GROUP_REDUCES}")


def _f32(x: torch.Tensor) -> torch.Tensor:
    """Scores are computed in at least fp32 (bf16/fp16 caches are upcast; fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def normalize(base: torch.Tensor) -> torch.Tensor:
    """f_norm: h_j / Σ_l h_l over the last axis (caote-math.md §4). Zero rows stay zero."""
    total = base.sum(-1, keepdim=True)
    return base / total.clamp_min(torch.finfo(base.dtype).tiny)


# --------------------------------------------------------------------------- base methods


def h2o_scores(attn: torch.Tensor) -> torch.Tensor:
    """H2O accumulated attention: h_j = Σ_t A_{t,j}. [B, Hq, Q, T] -> [B, Hq, T].

    The original H2O sums over every query seen so far; in the block loop the caller carries this
    sum across blocks and decoding steps. kvpress's ObservedAttentionPress instead divides by the
    number of queries that can see each key (mean received attention).
    """
    return attn.sum(-2)


def tova_scores(attn: torch.Tensor) -> torch.Tensor:
    """TOVA: attention of the last query, h_j = A_{-1,j}. [B, Hq, Q, T] -> [B, Hq, T].

    Per query head (original TOVA averages over *all* heads, kvpress's TOVAPress too); the group
    reduction is left to the caller.
    """
    return attn[..., -1, :]


def check_snapkv(window: int, kernel: int, pooling: str,
                 names: tuple[str, str, str] = ("window", "kernel", "pooling")) -> None:
    """ValueError naming the offending setting (``names``: what the caller calls window, kernel
    and pooling) unless window >= 1, kernel is odd and >= 1, and pooling is "max" or "avg"."""
    if window < 1:
        raise ValueError(f"{names[0]} must be at least 1 (the SnapKV observation window, in "
                         f"queries), got {window}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"{names[1]} must be an odd number >= 1, got {kernel}: the stride-1 "
                         "pool pads kernel // 2 tokens on each side, which keeps one score per "
                         "token only for an odd width (e.g. 5 or 7)")
    if pooling not in POOLINGS:
        raise ValueError(f"{names[2]} must be one of {POOLINGS}, got {pooling!r}")


def snapkv_scores(
    attn: torch.Tensor,
    window: int = 32,
    kernel: int = 7,
    pooling: Pooling = "max",
) -> torch.Tensor:
    """SnapKV votes: Σ over the last ``window`` queries, then 1-D pooling over the prefix.

    [B, Hq, Q, T] -> [B, Hq, T]. The observation window's w = min(window, Q, T) queries are
    the cache's last w entries (each query attends to itself: the evictor's and the press's
    queries are their newest tokens). As in the SnapKV paper, the votes the window gives the
    prefix (the first T - w entries) are *summed* over the window and smoothed by a stride-1
    pool of odd width ``kernel`` (padding kernel//2, so every entry keeps a score;
    ``check_snapkv``) that runs over the prefix alone: the window's own columns, which its
    queries attend to most, lend the entries before them no votes. The window's entries keep
    their summed votes unpooled; SnapKV always keeps them, which here is the caller's job
    (``protect_recent >= window``). Pooling runs along the cache order, which after earlier
    evictions is ascending position with gaps. kvpress's SnapKVPress differs: it *averages*
    over a 64-query window, uses ``avg_pool1d`` (kernel 5), and pads the window with
    ``max + 1``.
    """
    check_snapkv(window, kernel, pooling)
    t = attn.shape[-1]
    w = min(window, attn.shape[-2], t)
    votes = attn[..., -w:, :].sum(-2)  # [B, Hq, T]
    if t == w:  # no prefix: the window is the whole cache
        return votes
    b, h, _ = votes.shape
    prefix = votes[..., : t - w].reshape(b * h, 1, t - w)
    if pooling == "max":
        pooled = F.max_pool1d(prefix, kernel, stride=1, padding=kernel // 2)
    else:
        pooled = F.avg_pool1d(prefix, kernel, stride=1, padding=kernel // 2,
                              count_include_pad=False)
    return torch.cat([pooled.reshape(b, h, t - w), votes[..., t - w:]], -1)


# --------------------------------------------------------------------------- CAOTE


def rest_weight(weights: torch.Tensor) -> torch.Tensor:
    """r_j = Σ_{i≠j} w_i, the 1 - w_j of the closed form without its cancellation. [..., T].

    W - w_j loses every digit for the dominant entry m = argmax w when w_m rounds to W
    (fp32 softmax with a logit gap above ~17); r_m is therefore summed with w_m left out.
    For j ≠ m, w_j <= W/2, so W - w_j is exact to rounding.
    """
    top = weights.argmax(-1, keepdim=True)  # m: [..., 1]
    rest_top = weights.scatter(-1, top, 0.0).sum(-1, keepdim=True)  # Σ_{i≠m} w_i
    return (weights.sum(-1, keepdim=True) - weights).scatter(-1, top, rest_top)


def _per_rest(x: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """x / r, broadcast; r_j = 0 divides by 1 (``_score`` overrides those entries)."""
    return x / rest.where(rest > 0, 1.0)


def _score(weights: torch.Tensor, rest: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """c_j = w_j · dist_j, dist_j = ‖o'_j - v_j‖ (or its FastCAOTE stand-in). Where r_j = 0 no
    other entry has weight and the error is unbounded: +inf for w_j > 0 (the query would attend
    to nothing), 0 for an all-zero row. [..., T]."""
    return torch.where(rest > 0, weights * dist,
                       torch.where(weights > 0, torch.inf, 0.0).to(dist.dtype))


def caote_from_weights(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per-query-head CAOTE error norms for a weight vector summing to 1.

    weights [B, Hq, T] (α of one query, or normalised base scores); values [B, Hkv, T, d].
    Returns c [B, Hq, T], c_j = w_j/(1-w_j) · ‖o - v_j‖₂ with o = Σ_l w_l v_l, evaluated as

        c_j = w_j · ‖o'_j - v_j‖₂,   o'_j - v_j = Σ_{i≠j} w_i (v_i - v_j) / r_j,   r_j = Σ_{i≠j} w_i

    (o - v_j = r_j (o'_j - v_j), o'_j the output after evicting j). No step cancels: the sum
    runs on u = v - v_m, m = argmax w, so u_m = 0 drops the dominant term exactly and
    Σ_{i≠j} w_i (v_i - v_j) = Σ_i w_i u_i - W u_j with W = Σ_i w_i; r_j as in ``rest_weight``;
    the division precedes the norm (for the dominant entry the sum is of order r_m, whose fp32
    square can underflow). As w_j -> 1 the score tends to the finite ‖o'_j - v_j‖, never to 0.
    """
    w = _f32(weights)
    v = expand_kv(_f32(values), w.shape[1])  # [B, Hq, T, d]
    top = w.argmax(-1)[..., None, None].expand(-1, -1, 1, v.shape[-1])  # m: [B, Hq, 1, d]
    u = v - v.gather(2, top)  # u = v - v_m: [B, Hq, T, d], u_m = 0
    su = torch.einsum("bht,bhtd->bhd", w, u)  # Σ_i w_i u_i: [B, Hq, d]
    rest = rest_weight(w)
    shift = _per_rest(su.unsqueeze(2) - w.sum(-1)[..., None, None] * u,  # o'_j - v_j
                      rest.unsqueeze(-1))
    return _score(w, rest, shift.norm(dim=-1))


def fastcaote_from_weights(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """FastCAOTE: o replaced by the plain value mean, c_j = w_j/(1-w_j) · ‖v̄ - v_j‖₂.

    weights [B, Hq, T]; values [B, Hkv, T, d] -> [B, Hq, T]. Equals CAOTE when w is uniform.
    1 - w_j is taken as r_j = Σ_{i≠j} w_i (``rest_weight``).
    """
    w = _f32(weights)
    vf = _f32(values)
    dist = (vf.mean(2, keepdim=True) - vf).norm(dim=-1)  # ‖v̄ - v_j‖: [B, Hkv, T]
    rest = rest_weight(w)
    return _score(w, rest, _per_rest(expand_kv(dist, w.shape[1]), rest))


WeightScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def caote_scores(
    base: torch.Tensor, values: torch.Tensor, group: GroupReduce = "rss",
    scorer: WeightScorer = caote_from_weights,
) -> torch.Tensor:
    """CAOTE meta-policy on a base score (Paper Thm D.1): f_caote(f_norm(H), V).

    base [B, Hq, T] non-negative (use the true α of one query for plain CAOTE); values
    [B, Hkv, T, d]. Returns [B, Hkv, T], lower = evict first. ``rss`` gives, per KV entry, the norm
    of the group's concatenated pre-W_O output change under each head's (pseudo-)attention.
    ``scorer`` computes the per-query-head norms (this module's PyTorch version, or the Triton
    kernel of ``kernel.py``).
    """
    return reduce_group(scorer(normalize(_f32(base)), values), values.shape[1], group)


def fastcaote_scores(
    base: torch.Tensor, values: torch.Tensor, group: GroupReduce = "rss",
    scorer: WeightScorer = fastcaote_from_weights,
) -> torch.Tensor:
    """FastCAOTE meta-policy: as ``caote_scores`` with o replaced by the value mean."""
    return reduce_group(scorer(normalize(_f32(base)), values), values.shape[1], group)


def base_scores_per_kv(base: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """Plain base ranking per KV head: mean over the query group. [B, Hq, T] -> [B, Hkv, T]."""
    return reduce_group(_f32(base), n_kv_heads, "mean")


# --------------------------------------------------------------------------- exact errors


def eviction_shift(
    weights: torch.Tensor, values: torch.Tensor, evict: torch.Tensor
) -> torch.Tensor:
    """Closed-form output change o - o'_S for evicting the set S (caote-math.md §3).

    weights [..., T] summing to 1; values [..., T, d]; evict [..., T] bool mask of S.
    o - o'_S = Σ_{i∈S} w_i (v_i - o) / (1 - w_S). Returns [..., d].
    """
    out = torch.einsum("...t,...td->...d", weights, values)
    ws = weights * evict
    num = torch.einsum("...t,...td->...d", ws, values - out.unsqueeze(-2))
    return num / (1.0 - ws.sum(-1, keepdim=True))


def attention_output(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference attention of one query: softmax(q·K/√d masked to ``keep``) @ V.

    query [..., d]; keys, values [..., T, d]; keep [..., T] bool (None = all). Returns [..., d].
    Used by tests as the brute-force recomputation after eviction (s_j -> -∞).
    """
    logits = torch.einsum("...d,...td->...t", query, keys) / keys.shape[-1] ** 0.5
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    return torch.einsum("...t,...td->...d", logits.softmax(-1), values)
