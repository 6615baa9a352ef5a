"""The CAOTE score kernels against the float64 loop twin and the PyTorch twin, under NaN-poisoned
outputs, and their split of the tokens over programs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler.caote import kernel, naive
from padre_compiler.caote.scores import caote_from_weights, fastcaote_from_weights
from padre_compiler.verify.poison import nan_poisoned

pytestmark = pytest.mark.skipif(kernel.triton is None, reason="Triton is not installed")


@settings(max_examples=20, deadline=None, derandomize=True)
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), g=st.integers(1, 3), t=st.integers(1, 70),
       d=st.integers(1, 20), fast=st.booleans(), half=st.booleans(), seed=st.integers(0, 999),
       sharpness=st.sampled_from([1.0, 30.0]))
def test_kernel_matches_float64_twin(b: int, hkv: int, g: int, t: int, d: int, fast: bool,
                                     half: bool, seed: int, sharpness: float) -> None:
    """sharpness 30: logit gaps of tens, one weight per head near or at 1 in fp32."""
    gen = torch.Generator().manual_seed(seed)
    weights = (torch.randn(b, hkv * g, t, generator=gen, dtype=torch.float64) * sharpness
               ).softmax(-1)
    values = torch.randn(b, hkv, t, d, generator=gen, dtype=torch.float64)
    dtype = torch.float16 if half else torch.float32
    w, v = weights.to(dtype), values.to(dtype)
    assert kernel.triton_runs_on(v)  # the interpreter is on in tests without a GPU
    with nan_poisoned():
        got = kernel.caote_scores_fused(w, v, fast=fast)
    # the loop twin, per query head, on the same rounded inputs: only arithmetic is measured
    ref = torch.tensor([[naive._caote_head(w[i, h].double().tolist(),
                                           v[i, naive._kv(h, hkv * g, hkv)].double().tolist(),
                                           fast) for h in range(hkv * g)] for i in range(b)],
                       dtype=torch.float64)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("fast", [False, True])
def test_a_dominant_weight_that_rounds_to_one_scores_finite(fast: bool) -> None:
    """r_m = 1e-24 under a weight that rounds to 1: FastCAOTE's o'_m - v_m is 0.5 / r_m, whose
    fp32 square is past fp32's range (the twins give 5e23); CAOTE's sum is of order r_m."""
    w = torch.tensor([[[1.0, 1e-24]]])
    v = torch.tensor([[[[0.0], [1.0]]]])
    got = kernel.caote_scores_fused(w, v, fast=fast)
    ref = (fastcaote_from_weights if fast else caote_from_weights)(w, v)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0.0)


if kernel.triton is not None:
    tl = kernel.tl

    @kernel.triton.jit
    def _row_norms(x, out, BD: tl.constexpr):
        o_d = tl.arange(0, BD)
        o_t = tl.arange(0, 8)
        b_x = tl.load(x + o_t[:, None] * BD + o_d[None, :])
        tl.store(out + o_t, kernel.scaled_norm(b_x))

    @kernel.triton.jit
    def _row_fold(tops, stats, top, sums, S, SB: tl.constexpr, ks=None):
        """Row i's (m, W, r_m) into top[i], sums[i], and k* into ks[i] where given."""
        i_bh = tl.program_id(0).to(tl.int64)
        b_top, b_k = kernel.row_top(tops, stats, i_bh, S, SB)
        w_sum, r_top = kernel.row_sums(stats, i_bh, S, b_k, SB)
        tl.store(top + i_bh, b_top)
        if ks is not None:
            tl.store(ks + i_bh, b_k)
        tl.store(sums + 2 * i_bh, w_sum)
        tl.store(sums + 2 * i_bh + 1, r_top)


def test_scaled_norm_is_the_norm_of_every_row_torch_takes() -> None:
    """||x||_2 per row as torch's vector_norm in float64 gives it, finite or not: NaN wherever a
    row holds one (inf beside it too), inf, zero, subnormal, and past fp32's square."""
    inf, nan = float("inf"), float("nan")
    rows = [[nan, inf, 0, 0], [inf, -inf, 1, 0], [nan, 1, 0, 0], [0, 0, 0, 0],
            [1e-45, 0, 0, 0], [1e30, 1e30, 1e30, 1e30], [3e38, 3e38, 0, 0], [3, 4, 0, 0]]
    x = torch.tensor(rows, dtype=torch.float32)
    out = torch.empty(8)
    _row_norms[(1,)](x, out, BD=4)
    ref = torch.linalg.vector_norm(x.double(), dim=1).float()
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=1e-6, atol=0.0)


def test_wrong_formula_is_caught() -> None:
    """The check above can fail: scores without the 1/(1 - w) factor differ."""
    w = torch.tensor([[[0.7, 0.2, 0.1]]])
    v = torch.randn(1, 1, 3, 4)
    wrong = caote_from_weights(w, v) * (1 - w)
    assert not torch.allclose(kernel.caote_scores_fused(w, v), wrong)


@pytest.mark.parametrize(("w", "v"), [((1, 6, 40), (1, 4, 40, 16)),  # 6 heads on 4 KV heads
                                       ((1, 4, 40), (1, 2, 39, 16)),
                                       ((2, 4, 40), (1, 2, 40, 16))])
def test_heads_that_do_not_group_are_refused(w: tuple, v: tuple) -> None:
    """Query head h reads KV head h // G: with Hq not a multiple of Hkv the last read past
    the values (non-finite scores, silently)."""
    with pytest.raises(ValueError, match="Hq a multiple of Hkv"):
        kernel.caote_scores_fused(torch.rand(w), torch.randn(v))


@pytest.mark.parametrize("shape", [(1, 2, 0), (0, 2, 5), (1, 0, 5)])
def test_nothing_to_score_gives_an_empty_result(shape: tuple) -> None:
    """T = 0 had read v_m of no entry (a segfault); B = 0 and Hq = 0 launch nothing."""
    b, hq, t = shape
    got = kernel.caote_scores_fused(torch.rand(shape), torch.randn(b, 1 if hq else 0, t, 8))
    assert got.shape == shape and got.dtype == torch.float32


@pytest.mark.parametrize("fast", [False, True])
def test_eviction_uses_the_kernel_on_cuda_and_the_twin_elsewhere(fast: bool) -> None:
    from padre_compiler.caote.policy import VARIANTS
    from padre_compiler.caote.scores import caote_scores, fastcaote_scores

    gen = torch.Generator().manual_seed(3)
    base = torch.rand(1, 4, 33, generator=gen)
    values = torch.randn(1, 2, 33, 8, generator=gen)
    plain = (fastcaote_scores if fast else caote_scores)(base, values)
    got = VARIANTS["fastcaote" if fast else "caote"](base, values, "rss")
    assert torch.equal(got, plain)  # CPU tensors: the PyTorch twin, bit for bit
    if torch.cuda.is_available():
        gpu = VARIANTS["fastcaote" if fast else "caote"](base.cuda(), values.cuda(), "rss")
        assert torch.allclose(gpu.cpu(), plain, rtol=1e-5, atol=1e-6)


def _split(monkeypatch: pytest.MonkeyPatch, chunk: int) -> list[tuple[int, int]]:
    """Launches split into chunks of `chunk` tokens; the list records each launch's (S, CHUNK)."""
    seen: list[tuple[int, int]] = []

    def split(t: int, rows: int, device: torch.device) -> tuple[int, int]:
        seen.append((-(-t // chunk), chunk))
        return seen[-1]

    monkeypatch.setattr(kernel, "token_split", split)
    return seen


def _inputs(b: int, hq: int, hkv: int, t: int, d: int, gap: float = 0.0,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 softmax weights of normal logits, token t // 2's ahead by `gap`; normal values."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, hq, t, generator=gen, dtype=torch.float64)
    logits[..., t // 2] += gap
    return logits.softmax(-1).float(), torch.randn(b, hkv, t, d, generator=gen)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(("t", "chunk", "chunks"), [
    (100, 32, 4),  # T not a multiple of the chunk (the last holds 4 tokens)
    (20, 64, 1),  # T within one tile of one chunk
    (150, 64, 3),  # chunks of two tiles, the last of one partial tile
    (65, 32, 3),  # the last chunk one token
    (100, 128, 1),  # S = 1 over several tiles
])
@pytest.mark.parametrize("gap", [0.0, 20.0])  # 20: w_m = 1 or within 3e-6 of it, m = T // 2
def test_split_scores_equal_the_twin(monkeypatch: pytest.MonkeyPatch, fast: bool, t: int,
                                     chunk: int, chunks: int, gap: float) -> None:
    """Every token scored once, by the chunk that holds it, with s summed over every chunk:
    grouped-query heads (6 on 2), a head width under the block."""
    seen = _split(monkeypatch, chunk)
    w, v = _inputs(2, 6, 2, t, 20, gap, seed=t)
    with nan_poisoned():
        got = kernel.caote_scores_fused(w, v, fast=fast)
    assert seen == [(chunks, chunk)]
    ref = (fastcaote_from_weights if fast else caote_from_weights)(w, v)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("fast", [False, True])
def test_split_scores_where_no_other_entry_has_weight(monkeypatch: pytest.MonkeyPatch,
                                                      fast: bool) -> None:
    """r_j = 0: a head whose weight is all on one token in the last chunk (+inf there, 0
    elsewhere), and an all-zero head (0 everywhere), as the twin scores them."""
    _split(monkeypatch, 32)
    w, v = _inputs(1, 3, 1, 80, 8)
    w[0, 0] = 0.0
    w[0, 0, 70] = 1.0
    w[0, 1] = 0.0
    with nan_poisoned():
        got = kernel.caote_scores_fused(w, v, fast=fast)
    ref = (fastcaote_from_weights if fast else caote_from_weights)(w, v)
    assert got[0, 0, 70] == float("inf") and not got[0, :2].isnan().any()
    assert torch.equal(got[0, :2], ref[0, :2])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("dominant", [5, 40, 75])  # in chunk 0, 1 or 2 (of 32 tokens)
def test_a_dominant_weight_in_any_chunk_keeps_its_rest_exact(monkeypatch: pytest.MonkeyPatch,
                                                              fast: bool, dominant: int) -> None:
    """w_m rounds to 1 and the other 79 weights are 1e-26 each, spread over three chunks: r_m
    (7.9e-25) is the other chunks' sums plus m's chunk's sum less w_m, never W - w_m (0)."""
    _split(monkeypatch, 32)
    w = torch.full((1, 1, 80), 1e-26)
    w[0, 0, dominant] = 1.0
    v = torch.randn(1, 1, 80, 4, generator=torch.Generator().manual_seed(dominant))
    with nan_poisoned():
        got = kernel.caote_scores_fused(w, v, fast=fast)
    ref = (fastcaote_from_weights if fast else caote_from_weights)(w.double(), v.double())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0.0)


def _rows_folded(t: int) -> torch.Tensor:
    """Rows of t weights (chunks of 64 tokens: two tiles of 32) whose first largest entry
    lies at one place, each with another of equal weight after it (a later tile of its
    chunk, a later chunk, the same tile)."""
    w = torch.full((9, t), 0.01)
    w[0, [10, 40, 70, 140]] = 0.3  # chunk 0, tiles 0 and 1, chunks 1 and 2
    w[1, [70, 100, 140]] = 0.3  # chunk 1, tiles 0 and 1, chunk 2
    w[2, [140, 145]] = 0.3  # the last (short) chunk, one tile
    w[3, 130] = 0.5  # chunk 2 alone
    w[4] = 0.0  # all zero: m = 0
    w[5] = -torch.arange(t, 0, -1.0)  # all negative, largest last
    w[6] = float("-inf")
    w[6, [90, 120]] = -1.0  # -inf but two entries of chunk 1
    w[7] = 1e-26
    w[7, 100] = 1.0  # rounds to W: r_m = (t - 1) 1e-26, not W - w_m
    w[8] = 1e-26
    w[8, [5, 100]] = 1.0  # equal weights that round to 1 in two chunks
    return w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_chunks_fold_to_the_first_largest_weight_and_its_rest(dtype: torch.dtype) -> None:
    """row_top and row_sums over the weights pass's chunks give the row's m as torch.argmax
    finds it (the first of equal maxima, in a later tile of its chunk or a later chunk too), W
    and r_m = the sum of every weight but w_m, from w_m's own chunk less it: equal maxima cost
    scores no accuracy, so only this check sees which is taken."""
    t, chunk = 150, 64
    w = _rows_folded(t).to(dtype)
    n = -(-t // chunk)
    tops = torch.full((w.shape[0], n), -1, dtype=torch.int32)
    stats = torch.full((w.shape[0], n, 3), float("nan"))
    kernel.caote_weights_kernel[(w.shape[0], n)](w, tops, stats, t, chunk, n,
                                                 BT=kernel.CAOTE_TILE["BT"])
    top = torch.empty(w.shape[0], dtype=torch.int32)
    sums = torch.empty(w.shape[0], 2)
    _row_fold[(w.shape[0],)](tops, stats, top, sums, n, kernel.chunk_block(n))
    wd = w.double()
    m = wd.argmax(-1)
    assert top.tolist() == m.tolist()
    rest = wd.scatter(-1, m[:, None], 0.0).sum(-1)
    torch.testing.assert_close(sums.double(), torch.stack([wd.sum(-1), rest], -1), rtol=1e-6,
                               atol=0.0, equal_nan=True)


def _serial_fold(tops: torch.Tensor, stats: torch.Tensor) -> list[tuple[int, int, float, float]]:
    """Each row's (m, k*, W, r_m) as a walk over k = 0 .. S - 1 finds them: chunk k wins where
    its largest weight beats every earlier chunk's (NaN never does), from (m, k*) = (0, 0)."""
    out = []
    for top, stat in zip(tops.tolist(), stats.double().tolist(), strict=True):
        m, k_top, best = 0, 0, float("-inf")
        for k, (w_max, _, _) in enumerate(stat):
            if w_max > best:
                m, k_top, best = top[k], k, w_max
        w_sum = sum(s[1] for s in stat)
        out.append((m, k_top, w_sum, w_sum - stat[k_top][1] + stat[k_top][2]))
    return out


def _chunk_stats(s: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tops [R, S] and stats [R, S, 3] of rows whose largest chunk maxima tie across steps of
    any SB, lie in the last chunk, follow -inf and NaN chunks, or are none (all -inf, all NaN);
    each followed by a row of larger maxima (a fold reading past S would take one of them).
    W_k in [1, 2) and R_k in [0, 0.1): r_m taken at another chunk is off by about 1."""
    gen = torch.Generator().manual_seed(seed)
    inf, nan = float("inf"), float("nan")
    rows = []
    for case in range(7):
        m = torch.rand(s, generator=gen)
        if case == 0:  # equal maxima at every third chunk: in every step of SB >= 4 or none
            m[1::3] = 2.0
        elif case == 1:  # the largest in the last chunk, an equal one nowhere
            m[-1] = 2.0
        elif case == 2:  # -inf and NaN chunks before and after the largest
            m[::3], m[1::3] = -inf, nan
            m[s // 2] = 2.0
        elif case == 3:
            m[:] = -inf
        elif case == 4:
            m[:] = nan
        elif case == 5:  # NaN and -inf only
            m[:] = -inf
            m[::2] = nan
        else:  # equal maxima in the first and the last chunk
            m[[0, -1]] = 2.0
        rows += [m, torch.rand(s, generator=gen) + 10.0]
    maxima = torch.stack(rows)
    stats = torch.stack([maxima, torch.rand(maxima.shape, generator=gen) + 1.0,
                         torch.rand(maxima.shape, generator=gen) * 0.1], -1)
    tops = torch.randint(0, 2**20, maxima.shape, generator=gen, dtype=torch.int32)
    return tops, stats


@pytest.mark.parametrize(("s", "sb"), [(1, 1), (3, 4), (11, 4), (11, 16), (17, 8), (40, 32),
                                       (100, 32), (64, 16)])
def test_the_fold_takes_the_first_chunk_of_the_largest_weight_in_any_step(s: int,
                                                                          sb: int) -> None:
    """row_top and row_sums over S chunks, SB a step (one step, several, the last partial):
    the serial walk's m and k* exactly, its W and r_m to fp32 rounding; equal maxima across
    steps go to the earlier, NaN and -inf maxima never win, a row of none gives (0, 0)."""
    tops, stats = _chunk_stats(s, seed=s * 100 + sb)
    rows = tops.shape[0]
    top, ks = torch.full((rows,), -1, dtype=torch.int32), torch.full((rows,), -1,
                                                                     dtype=torch.int32)
    sums = torch.full((rows, 2), float("nan"))
    _row_fold[(rows,)](tops, stats, top, sums, s, sb, ks)
    ref = _serial_fold(tops, stats)
    assert list(zip(top.tolist(), ks.tolist(), strict=True)) == [r[:2] for r in ref]
    torch.testing.assert_close(sums.double(), torch.tensor([r[2:] for r in ref]).double(),
                               rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("dominant", [5, 200, 345])  # in chunk 0 (step 0), 6 (1), 10 (2)
def test_folds_of_several_steps_keep_the_rest_exact(monkeypatch: pytest.MonkeyPatch,
                                                    fast: bool, dominant: int) -> None:
    """S = 11 chunks of 32 tokens folded 4 a step (3 steps, the last of 3 chunks): a weight
    that rounds to 1 in any step keeps r_m = the other 345 weights' sum, and every token
    scores as the twin."""
    seen = _split(monkeypatch, 32)
    monkeypatch.setitem(kernel.CAOTE_TILE, "SB", 4)
    w = torch.full((1, 2, 346), 1e-26)
    w[0, :, dominant] = 1.0
    w[0, 1] = torch.rand(346, generator=torch.Generator().manual_seed(dominant))
    w[0, 1, [dominant, 100]] = 2.0  # equal maxima, beside one in chunk 3 (step 0)
    w[0, 1] /= w[0, 1].sum()
    v = torch.randn(1, 1, 346, 8, generator=torch.Generator().manual_seed(dominant))
    with nan_poisoned():
        got = kernel.caote_scores_fused(w, v, fast=fast)
    assert seen == [(11, 32)] and kernel.chunk_block(11) == 4
    ref = (fastcaote_from_weights if fast else caote_from_weights)(w.double(), v.double())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


def test_chunk_block_holds_s_up_to_its_cap() -> None:
    """SB: S's power of two (1 for S = 1), at most CAOTE_TILE["SB"]."""
    cap = kernel.CAOTE_TILE["SB"]
    assert [kernel.chunk_block(s) for s in (1, 2, 3, 17)] == [min(n, cap) for n in (1, 2, 4, 32)]
    assert kernel.chunk_block(528) == cap and cap & (cap - 1) == 0


def test_split_scores_are_bitwise_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of three chunks a row give the same bits, the second over NaN-filled scratch
    (a part of s read before it is written would differ); and the module adds no partial sums
    atomically (the interpreter runs programs in one order, so a reduction whose order varies
    on a GPU would not show here)."""
    from pathlib import Path

    _split(monkeypatch, 32)
    w, v = _inputs(1, 4, 2, 90, 24, 20.0)
    first = kernel.caote_scores_fused(w, v)
    with nan_poisoned():
        second = kernel.caote_scores_fused(w, v)
    assert torch.equal(first, second)
    assert "tl.atomic" not in Path(kernel.__file__).read_text()


@pytest.mark.parametrize("fast", [False, True])
def test_every_chunk_of_a_row_scores_with_the_same_sum(monkeypatch: pytest.MonkeyPatch,
                                                       fast: bool) -> None:
    """Chunks 1 and 2 holding the same tokens (weights and values), chunk 0 others and m,
    score bitwise alike: both use one s, its parts (a, a after b) added in one order."""
    _split(monkeypatch, 32)
    w, v = _inputs(2, 4, 2, 64, 24, 3.0)  # token 32 ahead: tokens 32.. move to chunk 0
    w, v = torch.cat([w[..., 32:], w[..., :32], w[..., :32]], -1), \
        torch.cat([v[..., 32:, :], v[..., :32, :], v[..., :32, :]], -2)
    w = w / w.sum(-1, keepdim=True)
    assert (w.argmax(-1) < 32).all()  # m in chunk 0
    got = kernel.caote_scores_fused(w, v, fast=fast)
    assert torch.equal(got[..., 32:64], got[..., 64:96])


def test_decode_split_fills_the_sms(monkeypatch: pytest.MonkeyPatch) -> None:
    """B = 1, Hq = 32 (Llama-3-8B decoding), T = 128k on a 132-SM device: at least one program
    per SM, chunks of whole tiles covering T with none empty; many rows or few tokens keep one
    chunk a row."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(multi_processor_count=132))
    cuda, bt = torch.device("cuda", 0), kernel.CAOTE_TILE["BT"]
    for rows, t in ((32, 128 * 1024), (8, 64 * 1024), (1, 512 * 1024)):
        n, chunk = kernel.token_split(t, rows, cuda)
        assert rows * n >= 132 and chunk % bt == 0 and (n - 1) * chunk < t <= n * chunk
    assert kernel.token_split(128 * 1024, 32 * 64, cuda)[0] == 1
    assert kernel.token_split(1000, 32, cuda)[0] == 1
    n, chunk = kernel.token_split(70, 4, torch.device("cpu"))  # the interpreter's
    assert n > 1 and chunk % bt == 0 and (n - 1) * chunk < 70 <= n * chunk


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fast", [False, True])
def test_decode_split_matches_the_twin_on_cuda(fast: bool) -> None:
    """B = 1, 32 query heads on 8 KV heads of 128, 16k tokens: the device's own split (several
    chunks a row), equal to the twin in float64 (an fp32 sum of 16k terms may round by the
    tolerance itself) and bitwise the same twice."""
    w, v = _inputs(1, 32, 8, 16 * 1024, 128, 20.0)
    w, v = w.cuda(), v.cuda()
    assert kernel.token_split(w.shape[-1], 32, w.device)[0] > 1
    got = kernel.caote_scores_fused(w, v, fast=fast)
    assert torch.equal(got, kernel.caote_scores_fused(w, v, fast=fast))
    ref = (fastcaote_from_weights if fast else caote_from_weights)(w.double(), v.double())
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
