"""CAOTE scores as one Triton kernel, beside its PyTorch twin (`scores.caote_from_weights`).

Per (batch, query head), with KV head h // G (grouped-query attention), m = argmax_j w_j,
u = v - v_m, W = sum_j w_j and r_j = sum_{i != j} w_i (`scores.rest_weight`):
    s   = sum_i w_i u_i                           (FastCAOTE: s = mean_i u_i and W -> 1)
    c_j = w_j * ||(s - W u_j) / r_j||_2 = w_j / (1 - w_j) * ||o - v_j||_2,
c_j = +inf where r_j = 0 < w_j (as in `scores`). u_m = 0 keeps the dominant entry out of s,
so c_m tends to the finite ||o'_m - v_m|| as w_m -> 1 instead of cancelling to 0. One program
reads its head's weights once (m) and its values twice (s, then the distances), in fp32
whatever the cache dtype, and writes c; nothing of size T x d is materialised. The kernel runs
where Triton runs (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1); elsewhere the
PyTorch scores are used. The evictor calls it through `evictor_scorer`: on CUDA tensors only
(the interpreter is for tests).
"""

from __future__ import annotations

import os

import torch

from padre_compiler.caote.scores import (
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
    def caote_fwd_kernel(w, v, c, T, D, H, G, s_wb, s_wh, s_vb, s_vh, s_vt,
                         FAST: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
        """w: [B, H, T]; v: [B, H / G, T, D] (last stride 1); c: [B, H, T] fp32. Offsets
        within a head (T * D, T) fit int32 (the launcher's check); batch and head offsets are
        int64 (a layer's cache passes 2**31 elements: 17 x 128k tokens of Llama-3-8B's)."""
        i_bh = tl.program_id(0).to(tl.int64)
        i_b, i_h = i_bh // H, i_bh % H
        p_w = w + i_b * s_wb + i_h * s_wh
        p_v = v + i_b * s_vb + (i_h // G) * s_vh
        o_d = tl.arange(0, BD)
        m_d = o_d < D
        b_max = tl.full([], float("-inf"), tl.float32)
        b_top = tl.zeros([], dtype=tl.int32)  # m = argmax_j w_j, first of equal maxima
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            b_w = tl.load(p_w + o_t, mask=o_t < T, other=float("-inf")).to(tl.float32)
            b_top = tl.where(tl.max(b_w, axis=0) > b_max, t0 + tl.argmax(b_w, axis=0), b_top)
            b_max = tl.maximum(b_max, tl.max(b_w, axis=0))
        b_vm = tl.load(p_v + b_top * s_vt + o_d, mask=m_d, other=0.).to(tl.float32)  # [BD]
        b_s = tl.zeros([BD], dtype=tl.float32)  # [BD] s = sum_i p_i u_i
        b_sum = tl.zeros([BT], dtype=tl.float32)  # lanes of W
        b_rest = tl.zeros([BT], dtype=tl.float32)  # lanes of r_m = sum_{i != m} w_i
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            m_t = o_t < T
            b_u = tl.load(p_v + o_t[:, None] * s_vt + o_d[None, :],
                          mask=m_t[:, None] & m_d[None, :], other=0.).to(tl.float32) \
                - b_vm[None, :]  # [BT, BD] u = v - v_m
            b_w = tl.load(p_w + o_t, mask=m_t, other=0.).to(tl.float32)  # [BT]
            b_p = tl.where(m_t, 1.0 / T, 0.0) if FAST else b_w
            b_s += tl.sum(b_p[:, None] * b_u, axis=0)  # [BT] x [BT, BD] -> [BD]
            b_sum += b_w
            b_rest += tl.where(o_t == b_top, 0.0, b_w)
        w_sum, r_top = tl.sum(b_sum, axis=0), tl.sum(b_rest, axis=0)
        scale = 1.0 if FAST else w_sum
        for t0 in range(0, T, BT):
            o_t = t0 + tl.arange(0, BT)
            m_t = o_t < T
            b_u = tl.load(p_v + o_t[:, None] * s_vt + o_d[None, :],
                          mask=m_t[:, None] & m_d[None, :], other=0.).to(tl.float32) \
                - b_vm[None, :]
            b_w = tl.load(p_w + o_t, mask=m_t, other=0.).to(tl.float32)
            b_r = tl.where(o_t == b_top, r_top, w_sum - b_w)  # [BT] r_j
            b_diff = (b_s[None, :] - scale * b_u) / tl.where(b_r > 0, b_r, 1.0)[:, None]
            b_dist = tl.sqrt(tl.sum(b_diff * b_diff, axis=1))  # [BT] ||o'_j - v_j||
            b_c = tl.where(b_r > 0, b_w * b_dist, tl.where(b_w > 0, float("inf"), 0.0))
            tl.store(c + i_bh * T + o_t, b_c, mask=m_t)


CAOTE_TILE = {"BT": 32, "num_warps": 4}  # tokens a step; the head width is one block


def head_block(d: int) -> int:
    """BD: the head width's block, a power of two of at least 16."""
    return max(16, triton.next_power_of_2(d))


def triton_runs_on(t: torch.Tensor) -> bool:
    return triton is not None and (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def caote_scores_fused(weights: torch.Tensor, values: torch.Tensor,
                       fast: bool = False) -> torch.Tensor:
    """CAOTE (or FastCAOTE) error norms: weights [B, Hq, T], values [B, Hkv, T, d] -> [B, Hq, T]
    (fp32; fp64 inputs, and one head's values past 2**31 elements, take the PyTorch path)."""
    b, hq, t = weights.shape
    d = values.shape[-1]
    hkv = values.shape[1] if values.dim() == 4 else 0
    if values.dim() != 4 or values.shape[0] != b or values.shape[2] != t or \
            (hq % hkv if hkv else hq > 0):
        raise ValueError(f"CAOTE scores: weights {tuple(weights.shape)} [B, Hq, T] and values "
                         f"{tuple(values.shape)} [B, Hkv, T, d] need the same B and T, and Hq "
                         "a multiple of Hkv (grouped-query heads)")
    if weights.numel() == 0:  # no entry to score (the kernel would read v_m of none)
        return torch.zeros(b, hq, t, device=values.device, dtype=torch.float32)
    if not triton_runs_on(values) or values.dtype == torch.float64 or t * d >= 2**31:
        twin = fastcaote_from_weights if fast else caote_from_weights
        return twin(weights, values)
    w, v = weights.contiguous(), values.contiguous()
    out = torch.empty(b, hq, t, device=values.device, dtype=torch.float32)
    caote_fwd_kernel[(b * hq,)](
        w, v, out, t, d, hq, hq // v.shape[1], w.stride(0), w.stride(1), v.stride(0),
        v.stride(1), v.stride(2), FAST=fast, BT=CAOTE_TILE["BT"], BD=head_block(d),
        num_warps=CAOTE_TILE["num_warps"])
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
