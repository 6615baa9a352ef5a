"""Naive float64 twin of ``scores.py``: explicit loops, same names, same shapes.

Imported by the tests only; every statement is one line of the math in caote-math.md.
"""

from __future__ import annotations

import math

import torch


def _kv(h: int, n_q: int, n_kv: int) -> int:
    """KV head read by query head h (HF repeat_kv layout)."""
    return h // (n_q // n_kv)


def h2o_scores(attn: torch.Tensor) -> torch.Tensor:
    b, hq, q, t = attn.shape
    out = torch.zeros(b, hq, t, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            for j in range(t):
                out[bi, h, j] = sum(float(attn[bi, h, s, j]) for s in range(q))
    return out


def tova_scores(attn: torch.Tensor) -> torch.Tensor:
    return attn[..., -1, :].double().clone()


def snapkv_scores(
    attn: torch.Tensor, window: int = 32, kernel: int = 7, pooling: str = "max"
) -> torch.Tensor:
    b, hq, q, t = attn.shape
    out = torch.zeros(b, hq, t, dtype=torch.float64)
    half = kernel // 2
    w = min(window, q, t)  # the window's queries are the cache's last w entries
    for bi in range(b):
        for h in range(hq):
            votes = [sum(float(attn[bi, h, s, j]) for s in range(q - w, q)) for j in range(t)]
            for j in range(t):
                if j >= t - w:  # the window's own entries: their votes, unpooled
                    out[bi, h, j] = votes[j]
                    continue
                nb = votes[max(0, j - half): min(t - w, j + half + 1)]  # the prefix's alone
                out[bi, h, j] = max(nb) if pooling == "max" else sum(nb) / len(nb)
    return out


def _caote_head(w: list[float], vals: list[list[float]], fast: bool) -> list[float]:
    """c_j = w_j · ‖o'_j - v_j‖, o'_j = Σ_{i≠j} w_i v_i / r_j, r_j = Σ_{i≠j} w_i (FastCAOTE:
    w_j / r_j · ‖v̄ - v_j‖); +inf where r_j = 0 < w_j, 0 where w_j = r_j = 0."""
    t, d = len(w), len(vals[0])
    mean = [sum(vals[i][k] for i in range(t)) / t for k in range(d)]
    res = []
    for j in range(t):
        rest = sum(w[i] for i in range(t) if i != j)
        if rest == 0:
            res.append(math.inf if w[j] > 0 else 0.0)
        elif fast:
            res.append(w[j] / rest * math.dist(mean, vals[j]))
        else:
            evicted = [sum(w[i] * vals[i][k] for i in range(t) if i != j) / rest
                       for k in range(d)]
            res.append(w[j] * math.dist(evicted, vals[j]))
    return res


def _meta(base: torch.Tensor, values: torch.Tensor, group: str, fast: bool) -> torch.Tensor:
    b, hq, t = base.shape
    hkv = values.shape[1]
    per_q = torch.zeros(b, hq, t, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            row = [float(x) for x in base[bi, h]]
            total = sum(row)
            w = [x / total if total > 0 else 0.0 for x in row]
            vals = values[bi, _kv(h, hq, hkv)].double().tolist()
            per_q[bi, h] = torch.tensor(_caote_head(w, vals, fast), dtype=torch.float64)
    return reduce_group(per_q, hkv, group)


def reduce_group(scores: torch.Tensor, n_kv_heads: int, how: str = "rss") -> torch.Tensor:
    b, hq, t = scores.shape
    g = hq // n_kv_heads
    out = torch.zeros(b, n_kv_heads, t, dtype=torch.float64)
    for bi in range(b):
        for k in range(n_kv_heads):
            for j in range(t):
                col = [float(scores[bi, k * g + i, j]) for i in range(g)]
                if how == "rss":
                    out[bi, k, j] = math.sqrt(sum(x * x for x in col))
                elif how == "mean":
                    out[bi, k, j] = sum(col) / g
                else:
                    out[bi, k, j] = max(col)
    return out


def caote_scores(base: torch.Tensor, values: torch.Tensor, group: str = "rss") -> torch.Tensor:
    return _meta(base, values, group, fast=False)


def fastcaote_scores(base: torch.Tensor, values: torch.Tensor, group: str = "rss") -> torch.Tensor:
    return _meta(base, values, group, fast=True)


def brute_force_error(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      evict: list[int]) -> float:
    """‖o - o'_S‖₂ by recomputing softmax attention without the evicted keys (float64 loops)."""
    t, d = keys.shape
    logits = [sum(float(query[k]) * float(keys[i, k]) for k in range(d)) / math.sqrt(d)
              for i in range(t)]

    def out(keep: list[int]) -> list[float]:
        m = max(logits[i] for i in keep)
        e = {i: math.exp(logits[i] - m) for i in keep}
        z = sum(e.values())
        return [sum(e[i] / z * float(values[i, k]) for i in keep) for k in range(d)]

    full = out(list(range(t)))
    part = out([i for i in range(t) if i not in set(evict)])
    return math.sqrt(sum((a - c) ** 2 for a, c in zip(full, part, strict=True)))
