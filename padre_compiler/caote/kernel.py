"""CAOTE scores as three Triton kernels, beside their PyTorch twin (`scores.caote_from_weights`).

Per (batch, query head) row r = b * H + h, with KV head h // G (grouped-query attention),
m = argmax_j w_j, u = v - v_m, W = sum_j w_j and r_j = sum_{i != j} w_i (`scores.rest_weight`):
    s   = sum_i w_i u_i                           (FastCAOTE: s = mean_i u_i and W -> 1)
    c_j = w_j * ||(s - W u_j) / r_j||_2 = w_j / (1 - w_j) * ||o - v_j||_2,
c_j = +inf where r_j = 0 < w_j (as in `scores`). u_m = 0 keeps the dominant entry out of s,
so c_m tends to the finite ||o'_m - v_m|| as w_m -> 1 instead of cancelling to 0.

The token axis is split into S chunks of CHUNK tokens (a multiple of the token tile BT), so a
launch runs B * H * S programs rather than B * H: at decode time B = 1 and H alone leaves most
of a GPU's SMs idle while each program walks the whole cache. Three launches, each of one
program a (row, chunk), no atomics:
1. `caote_weights_kernel`: the chunk's largest weight, its first index, its sum and its sum
   less that entry, from the weights alone;
2. `caote_partial_kernel`: m from the S chunks' (`row_top`), then the chunk's part of s, into a
   [B, H, S, d] fp32 buffer;
3. `caote_distance_kernel`: m, W and r_m from the S chunks' (`row_top`, `row_sums`), s as the
   sum of the S parts, then c over the chunk.
Kernels 2 and 3 fold the S chunks' in block loads of SB chunks a step (`chunk_block`: S's
power of two, at most CAOTE_TILE["SB"]) and block reductions, in one fixed order: the same m,
W, r_m and s, bit for bit, in every chunk of a row and every run (m exactly the first largest
weight's index, whatever the order).
The values are read twice (2, then 3), in fp32 whatever the cache dtype; nothing of size
T x d is materialised. `token_split` chooses S. The kernels run where Triton runs (CUDA
tensors, or CPU tensors under TRITON_INTERPRET=1); elsewhere the PyTorch scores are used. The
evictor calls them through `evictor_scorer`: on CUDA tensors only (the interpreter is for
tests). The launches go through the launchers' `start` (launch.py: GridLimitError past a
GPU's grid limits; S stays far below axis 1's).
"""

from __future__ import annotations

import os

import torch

from padre_compiler.backends.triton.launch import start
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

    # Shapes (all contiguous): w [B, H, T], v [B, H / G, T, D], R = B * H rows. Offsets within
    # a row (T * D, T) fit int32 (the launcher's check); row offsets are int64 (a layer's cache
    # passes 2**31 elements: 17 x 128k tokens of Llama-3-8B's).

    @triton.jit
    def head_values(v, b_top, i_bh, T, D, H, G, BD: tl.constexpr):
        """Row i_bh (int64), m -> (v[b, h // G] as a pointer, [BD] fp32 v_m, 0 past D)."""
        p_v = v + ((i_bh // H) * (H // G) + (i_bh % H) // G) * T * D
        o_d = tl.arange(0, BD)
        b_vm = tl.load(p_v + b_top * D + o_d, mask=o_d < D, other=0.).to(tl.float32)
        return p_v, b_vm

    @triton.jit
    def row_top(tops, stats, i_bh, S, SB: tl.constexpr):
        """(m, k*): the row's first largest weight's index and its chunk, from
        `caote_weights_kernel`'s tops [R, S] and stats [R, S, 3]: k* is the first chunk whose
        largest weight w_k equals the row's largest, m = tops[k*] (as torch.argmax: the first
        of equal maxima). NaN and -inf chunk maxima never win; a row of none else gives
        (0, 0). Read SB chunks a step (a power of two): a step's candidates are its w_k above
        the earlier steps' largest, so a tie goes to the earlier step, and within the step to
        the least k."""
        b_max = tl.full([], float("-inf"), tl.float32)  # the largest w_k of the earlier steps
        b_top = tl.zeros([], dtype=tl.int32)
        b_k = tl.zeros([], dtype=tl.int32)
        for k0 in range(0, S, SB):
            o_k = k0 + tl.arange(0, SB)  # [SB] chunks k0 .. k0 + SB - 1, those past S masked
            b_m = tl.load(stats + (i_bh * S + o_k) * 3, mask=o_k < S, other=float("-inf"))
            # candidates: NaN and -inf are none, whatever tl.max does with NaN
            b_m = tl.where(b_m > b_max, b_m, float("-inf"))
            m_step = tl.max(b_m, axis=0)
            k_step = tl.min(tl.where(b_m == m_step, o_k, S), axis=0)  # its first chunk
            b_tops = tl.load(tops + i_bh * S + o_k, mask=o_k < S, other=0)
            t_step = tl.sum(tl.where(o_k == k_step, b_tops, 0), axis=0)  # tops[k_step]
            b_top = tl.where(m_step > b_max, t_step, b_top)
            b_k = tl.where(m_step > b_max, k_step, b_k)
            b_max = tl.maximum(b_max, m_step)
        return b_top, b_k

    @triton.jit
    def row_sums(stats, i_bh, S, b_k, SB: tl.constexpr):
        """(W, r_m) = (sum_k W_k, sum_{k != k*} W_k + R_k*) over the chunks' sums W_k and sums
        R_k less their largest entry: r_m keeps w_m out of every sum (W - w_m keeps no digit
        when w_m rounds to W). Lane i of [SB] adds chunks i, SB + i, ... in turn, then one tree
        reduction over the lanes: a fixed order, the same in every program and every run."""
        b_w = tl.zeros([SB], dtype=tl.float32)  # lanes of W
        b_r = tl.zeros([SB], dtype=tl.float32)  # lanes of r_m
        for k0 in range(0, S, SB):
            o_k = k0 + tl.arange(0, SB)  # [SB] chunks k0 .. k0 + SB - 1, those past S masked
            p_k = stats + (i_bh * S + o_k) * 3
            w_k = tl.load(p_k + 1, mask=o_k < S, other=0.)
            b_w += w_k
            b_r += tl.where(o_k == b_k, tl.load(p_k + 2, mask=o_k < S, other=0.), w_k)
        return tl.sum(b_w, axis=0), tl.sum(b_r, axis=0)

    @triton.jit
    def value_tile(p_v, b_vm, t0, T, D, BT: tl.constexpr, BD: tl.constexpr):
        """[BT, BD] fp32 u = v - v_m of tokens t0 .. t0 + BT - 1 (rows past T: -v_m, columns
        past D: 0)."""
        o_t = t0 + tl.arange(0, BT)
        o_d = tl.arange(0, BD)
        b_v = tl.load(p_v + o_t[:, None] * D + o_d[None, :],
                      mask=(o_t < T)[:, None] & (o_d < D)[None, :], other=0.)
        return b_v.to(tl.float32) - b_vm[None, :]

    @triton.jit
    def scaled_norm(x):
        """[BT, BD] -> [BT] ||x_j||_2 as a_j ||x_j / a_j||_2, a_j = max_i |x_ji|: no square
        overflows or underflows where the norm itself is finite and normal (FastCAOTE's
        dominant entry divides an O(1) distance by r_m, 1e19 and up where its weight rounds
        to 1, whose plain square passes fp32's range). A row holding NaN has norm NaN (as
        torch's norm; tl.max passes NaN over), else one holding inf has norm inf."""
        b_big = tl.max(tl.abs(x), axis=1)  # [BT]
        b_unit = x / tl.where(b_big > 0, b_big, 1.0)[:, None]
        b_norm = b_big * tl.sqrt(tl.sum(b_unit * b_unit, axis=1))
        b_nan = tl.sum((x != x).to(tl.int32), axis=1) > 0
        return tl.where(b_nan, float("nan"), tl.where(b_big == float("inf"), b_big, b_norm))

    @triton.jit
    def caote_weights_kernel(w, tops, stats, T, CHUNK, S, BT: tl.constexpr):
        """Grid (R, S). w: [R, T] over chunk k (as in `caote_partial_kernel`) -> tops[r, k]
        int32, the chunk's first index of its largest weight j_k; stats[r, k] fp32, (w_{j_k},
        W_k, R_k) = (its largest weight, sum_j w_j, sum_{j != j_k} w_j) over the chunk."""
        i_bh = tl.program_id(0).to(tl.int64)
        i_k = tl.program_id(1)
        p_w = w + i_bh * T
        c0 = i_k * CHUNK  # chunk k: tokens c0 .. c0 + min(CHUNK, T - c0) - 1
        c1 = c0 + tl.minimum(CHUNK, T - c0)
        b_max = tl.full([], float("-inf"), tl.float32)
        b_top = tl.zeros([], dtype=tl.int32)
        for t0 in range(c0, c1, BT):
            o_t = t0 + tl.arange(0, BT)
            b_w = tl.load(p_w + o_t, mask=o_t < T, other=float("-inf")).to(tl.float32)
            b_top = tl.where(tl.max(b_w, axis=0) > b_max, t0 + tl.argmax(b_w, axis=0), b_top)
            b_max = tl.maximum(b_max, tl.max(b_w, axis=0))
        b_sum = tl.zeros([BT], dtype=tl.float32)  # lanes of W_k
        b_rest = tl.zeros([BT], dtype=tl.float32)  # lanes of R_k
        for t0 in range(c0, c1, BT):
            o_t = t0 + tl.arange(0, BT)
            b_w = tl.load(p_w + o_t, mask=o_t < T, other=0.).to(tl.float32)
            b_sum += b_w
            b_rest += tl.where(o_t == b_top, 0.0, b_w)
        i_rk = i_bh * S + i_k
        tl.store(tops + i_rk, b_top)
        tl.store(stats + 3 * i_rk, b_max)
        tl.store(stats + 3 * i_rk + 1, tl.sum(b_sum, axis=0))
        tl.store(stats + 3 * i_rk + 2, tl.sum(b_rest, axis=0))

    @triton.jit
    def caote_partial_kernel(w, v, tops, stats, part, T, D, H, G, CHUNK, S, FAST: tl.constexpr,
                             BT: tl.constexpr, BD: tl.constexpr, SB: tl.constexpr):
        """Grid (R, S). part: [R, S, D] fp32, part[r, k] = sum_{i in chunk k} p_i u_i over
        chunk k = tokens [k CHUNK, min((k + 1) CHUNK, T)), p_i = w_i (FastCAOTE: 1 / T);
        CHUNK a multiple of BT, so a chunk's tiles are the whole-row walk's tiles."""
        i_bh = tl.program_id(0).to(tl.int64)
        i_k = tl.program_id(1)
        b_top, _ = row_top(tops, stats, i_bh, S, SB)
        p_v, b_vm = head_values(v, b_top, i_bh, T, D, H, G, BD)
        b_s = tl.zeros([BD], dtype=tl.float32)  # [BD] this chunk's part of s
        c0 = i_k * CHUNK  # chunk k: tokens c0 .. c0 + min(CHUNK, T - c0) - 1
        for t0 in range(c0, c0 + tl.minimum(CHUNK, T - c0), BT):
            o_t = t0 + tl.arange(0, BT)
            if FAST:
                b_p = tl.where(o_t < T, 1.0 / T, 0.0)
            else:
                b_p = tl.load(w + i_bh * T + o_t, mask=o_t < T, other=0.).to(tl.float32)
            b_s += tl.sum(b_p[:, None] * value_tile(p_v, b_vm, t0, T, D, BT, BD), axis=0)
        o_d = tl.arange(0, BD)
        tl.store(part + (i_bh * S + i_k) * D + o_d, b_s, mask=o_d < D)

    @triton.jit
    def caote_distance_kernel(w, v, tops, stats, part, c, T, D, H, G, CHUNK, S,
                              FAST: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                              SB: tl.constexpr):
        """Grid (R, S). c: [R, T] fp32 over chunk k (as in `caote_partial_kernel`):
        c_j = w_j * ||(s - W u_j) / r_j||_2 with s = sum_k' part[r, k'] (SB parts a step, each
        step's [SB, BD] block summed over its parts, the steps in turn), r_j = W - w_j for
        j != m and r_m from `row_sums` (FastCAOTE: W -> 1 in front of u_j, not in r_j);
        c_j = +inf where r_j = 0 < w_j, 0 where r_j = w_j = 0."""
        i_bh = tl.program_id(0).to(tl.int64)
        i_k = tl.program_id(1)
        b_top, b_k = row_top(tops, stats, i_bh, S, SB)
        p_v, b_vm = head_values(v, b_top, i_bh, T, D, H, G, BD)
        o_d = tl.arange(0, BD)
        b_s = tl.zeros([BD], dtype=tl.float32)  # [BD] s, the same in every chunk of the row
        for k0 in range(0, S, SB):
            o_k = k0 + tl.arange(0, SB)  # [SB] parts k0 .. k0 + SB - 1, those past S masked
            b_s += tl.sum(tl.load(part + (i_bh * S + o_k[:, None]) * D + o_d[None, :],
                                  mask=(o_k < S)[:, None] & (o_d < D)[None, :], other=0.),
                          axis=0)
        w_sum, r_top = row_sums(stats, i_bh, S, b_k, SB)
        scale = 1.0 if FAST else w_sum
        c0 = i_k * CHUNK  # chunk k: tokens c0 .. c0 + min(CHUNK, T - c0) - 1
        for t0 in range(c0, c0 + tl.minimum(CHUNK, T - c0), BT):
            o_t = t0 + tl.arange(0, BT)
            m_t = o_t < T
            b_w = tl.load(w + i_bh * T + o_t, mask=m_t, other=0.).to(tl.float32)
            b_r = tl.where(o_t == b_top, r_top, w_sum - b_w)  # [BT] r_j
            b_diff = (b_s[None, :] - scale * value_tile(p_v, b_vm, t0, T, D, BT, BD)) \
                / tl.where(b_r > 0, b_r, 1.0)[:, None]  # [BT, BD] o'_j - v_j
            b_dist = scaled_norm(b_diff)  # [BT] ||o'_j - v_j||
            b_c = tl.where(b_r > 0, b_w * b_dist, tl.where(b_w > 0, float("inf"), 0.0))
            tl.store(c + i_bh * T + o_t, b_c, mask=m_t)


# BT: tokens a step; SB: the most chunks a step of the kernels' folds over a row's S chunks
# (`chunk_block`); the head width is one block
CAOTE_TILE = {"BT": 32, "SB": 32, "num_warps": 4}
# token_split: programs a CUDA launch aims for per SM, the fewest tiles a CUDA chunk holds (the
# distance kernel reads the S parts of s once a chunk), and the chunks a row in the interpreter
CAOTE_SPLIT = {"programs_per_sm": 4, "min_chunk_tiles": 32, "interpreter_chunks": 3}


def head_block(d: int) -> int:
    """BD: the head width's block, a power of two of at least 16."""
    return max(16, triton.next_power_of_2(d))


def chunk_block(s: int) -> int:
    """SB: the chunks a step of the folds over S chunks, the power of two that holds them up to
    CAOTE_TILE["SB"] (past it, several steps: the distance kernel's [SB, BD] fp32 block of
    parts of s stays at most SB x BD / (32 num_warps) registers a thread)."""
    return min(triton.next_power_of_2(max(s, 1)), CAOTE_TILE["SB"])


def token_split(t: int, rows: int, device: torch.device) -> tuple[int, int]:
    """(S, CHUNK): each row's t tokens in S = ceil(t / CHUNK) >= 1 chunks of CHUNK tokens, a
    multiple of the tile BT (the last chunk may be shorter). On CUDA, rows * S reaches
    programs_per_sm programs per SM where each chunk keeps min_chunk_tiles tiles; elsewhere
    (the interpreter) up to interpreter_chunks chunks of whole tiles, so tests run several."""
    tiles = triton.cdiv(t, CAOTE_TILE["BT"])
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        want = min(triton.cdiv(CAOTE_SPLIT["programs_per_sm"] * sms, rows),
                   tiles // CAOTE_SPLIT["min_chunk_tiles"])
    else:
        want = CAOTE_SPLIT["interpreter_chunks"]
    per = triton.cdiv(tiles, max(1, min(want, tiles)))  # tiles a chunk
    return triton.cdiv(tiles, per), per * CAOTE_TILE["BT"]


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
    if weights.numel() == 0:  # no entry to score (the kernels would read v_m of none)
        return torch.zeros(b, hq, t, device=values.device, dtype=torch.float32)
    if not triton_runs_on(values) or values.dtype == torch.float64 or t * d >= 2**31:
        twin = fastcaote_from_weights if fast else caote_from_weights
        return twin(weights, values)
    w, v = weights.contiguous(), values.contiguous()
    rows, dev = b * hq, values.device
    n_chunks, chunk = token_split(t, rows, dev)
    tops = torch.empty(rows, n_chunks, device=dev, dtype=torch.int32)  # j_k
    stats = torch.empty(rows, n_chunks, 3, device=dev, dtype=torch.float32)  # (w_j_k, W_k, R_k)
    part = torch.empty(b, hq, n_chunks, d, device=dev, dtype=torch.float32)  # parts of s
    out = torch.empty(b, hq, t, device=dev, dtype=torch.float32)
    bt, warps = CAOTE_TILE["BT"], CAOTE_TILE["num_warps"]
    launch = dict(FAST=fast, BT=bt, BD=head_block(d), SB=chunk_block(n_chunks), num_warps=warps)
    start(caote_weights_kernel, (rows, n_chunks))(w, tops, stats, t, chunk, n_chunks, BT=bt,
                                                   num_warps=warps)
    start(caote_partial_kernel, (rows, n_chunks))(w, v, tops, stats, part, t, d, hq, hq // hkv,
                                                   chunk, n_chunks, **launch)
    start(caote_distance_kernel, (rows, n_chunks))(w, v, tops, stats, part, out, t, d, hq,
                                                    hq // hkv, chunk, n_chunks, **launch)
    return out


def evictor_scorer(fast: bool) -> WeightScorer:
    """The per-query-head scorer eviction uses: these kernels on CUDA tensors when Triton is
    installed, the PyTorch twin otherwise."""
    twin = fastcaote_from_weights if fast else caote_from_weights

    def score(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        if values.is_cuda and triton is not None and values.dtype != torch.float64:
            return caote_scores_fused(weights, values, fast)
        return twin(weights, values)

    return score
