"""CAOTE scores as one Triton kernel, beside its PyTorch twin (`scores.caote_from_weights`).

Per (batch, query head), with KV head h // G (grouped-query attention):
    o   = sum_j w_j v_j              (FastCAOTE: o = mean_j v_j)
    c_j = w_j / (1 - w_j) * ||o - v_j||_2,   w_j clamped to [0, 1 - EPS]
One program reads its head's values twice (once for o, once for the distances), in fp32
whatever the cache dtype, and writes c; nothing of size T x d is materialised. The kernel runs
where Triton runs (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1); elsewhere the
PyTorch scores are used. The evictor calls it through `evictor_scorer`: on CUDA tensors only
(the interpreter is for tests).
"""

from __future__ import annotations

import os

import torch

from padre_compiler.caote.scores import (
    EPS,
    WeightScorer,
    caote_from_weights,
    fastcaote_from_weights,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: the PyTorch twin serves
    triton = None

if triton is not None:

    @triton.jit
    def caote_fwd_kernel(w, v, c, T, D, H, G, s_wb, s_wh, s_vb, s_vh, s_vt, eps,
                         FAST: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
        """w: [B, H, T]; v: [B, H / G, T, D] (last stride 1); c: [B, H, T] fp32."""
        i_bh = tl.program_id(0)
        i_b, i_h = i_bh // H, i_bh % H
        p_w = w + i_b * s_wb + i_h * s_wh
        p_v = v + i_b * s_vb + (i_h // G) * s_vh
        o_d = tl.arange(0, BD)
        m_d = o_d < D
        b_o = tl.zeros([BD], dtype=tl.float32)  # [BD] the (pseudo-)output o
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            m_t = o_t < T
            b_v = tl.load(p_v + o_t[:, None] * s_vt + o_d[None, :],
                          mask=m_t[:, None] & m_d[None, :], other=0.).to(tl.float32)  # [BT, BD]
            if FAST:
                b_w = tl.where(m_t, 1.0 / T, 0.0)
            else:
                b_w = tl.load(p_w + o_t, mask=m_t, other=0.).to(tl.float32)  # [BT]
            b_o += tl.sum(b_w[:, None] * b_v, axis=0)  # [BT] x [BT, BD] -> [BD]
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            m_t = o_t < T
            b_v = tl.load(p_v + o_t[:, None] * s_vt + o_d[None, :],
                          mask=m_t[:, None] & m_d[None, :], other=0.).to(tl.float32)
            b_diff = b_o[None, :] - b_v  # masked channels: 0 - 0
            b_dist = tl.sqrt(tl.sum(b_diff * b_diff, axis=1))  # [BT] ||o - v_j||
            b_a = tl.load(p_w + o_t, mask=m_t, other=0.).to(tl.float32)
            b_a = tl.minimum(tl.maximum(b_a, 0.0), 1.0 - eps)
            tl.store(c + i_bh * T + o_t, b_a / (1.0 - b_a) * b_dist, mask=m_t)


def triton_runs_on(t: torch.Tensor) -> bool:
    return triton is not None and (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def caote_scores_fused(weights: torch.Tensor, values: torch.Tensor,
                       fast: bool = False) -> torch.Tensor:
    """CAOTE (or FastCAOTE) error norms: weights [B, Hq, T], values [B, Hkv, T, d] -> [B, Hq, T]
    (fp32; fp64 inputs stay on the float64 PyTorch path)."""
    if not triton_runs_on(values) or values.dtype == torch.float64:
        twin = fastcaote_from_weights if fast else caote_from_weights
        return twin(weights, values)
    b, hq, t = weights.shape
    d = values.shape[-1]
    w, v = weights.contiguous(), values.contiguous()
    out = torch.empty(b, hq, t, device=values.device, dtype=torch.float32)
    caote_fwd_kernel[(b * hq,)](
        w, v, out, t, d, hq, hq // v.shape[1], w.stride(0), w.stride(1), v.stride(0),
        v.stride(1), v.stride(2), EPS, FAST=fast, BT=32,
        BD=max(16, triton.next_power_of_2(d)))
    return out


def evictor_scorer(fast: bool) -> WeightScorer:
    """The per-query-head scorer eviction uses: this kernel on CUDA tensors when Triton is
    installed, the PyTorch twin otherwise."""
    twin = fastcaote_from_weights if fast else caote_from_weights

    def score(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        if values.is_cuda and triton is not None and values.dtype != torch.float64:
            return caote_scores_fused(weights, values, fast)
        return twin(weights, values)

    return score
