"""Vectorised scores vs the float64 loop twin; closed forms vs brute-force recomputation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from padre_compiler.caote import kernel, naive, scores
from padre_compiler.caote.policy import VARIANTS, EvictionConfig, protected_mask, select_keep

CAOTE = settings.get_profile("caote")


@st.composite
def instances(draw: st.DrawFn) -> dict:
    """Random GQA attention [B, Hq, Q, T] (causal-free rows summing to 1) and values."""
    b = draw(st.integers(1, 2))
    hkv = draw(st.integers(1, 3))
    g = draw(st.integers(1, 3))
    q = draw(st.integers(1, 4))
    t = draw(st.integers(2, 12))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, hkv * g, q, t, generator=gen, dtype=torch.float64) * 2
    values = torch.randn(b, hkv, t, d, generator=gen, dtype=torch.float64)
    return {"attn": logits.softmax(-1), "values": values}


@CAOTE
@given(instances(), st.sampled_from(["max", "avg"]), st.integers(1, 4), st.sampled_from([1, 3, 5]))
def test_base_scores_match_naive(inst: dict, pooling: str, window: int, kernel: int) -> None:
    attn = inst["attn"]
    torch.testing.assert_close(scores.h2o_scores(attn), naive.h2o_scores(attn))
    torch.testing.assert_close(scores.tova_scores(attn), naive.tova_scores(attn))
    torch.testing.assert_close(scores.snapkv_scores(attn, window, kernel, pooling),
                               naive.snapkv_scores(attn, window, kernel, pooling))


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_snapkv_pools_the_prefix_alone(pooling: str) -> None:
    """The observation window's queries attend to themselves alone: SnapKV gives the prefix no
    votes (the paper pools attn[..., -w:, :-w]). A pool over the whole cache had lent the
    kernel // 2 entries before the window the window's own votes, so they were always kept."""
    t, w = 12, 4
    attn = torch.zeros(1, 1, w, t, dtype=torch.float64)
    attn[0, 0, torch.arange(w), torch.arange(t - w, t)] = 1.0  # each window query on itself
    for score in (scores.snapkv_scores(attn, w, 7, pooling),
                  naive.snapkv_scores(attn, w, 7, pooling)):
        assert not score[..., : t - w].any(), score
        assert torch.equal(score[0, 0, t - w:], torch.ones(w, dtype=torch.float64))


@CAOTE
@given(instances(), st.sampled_from(["rss", "mean", "max"]), st.sampled_from(["h2o", "tova"]))
def test_meta_scores_match_naive(inst: dict, group: str, base_name: str) -> None:
    attn, values = inst["attn"], inst["values"]
    base = scores.h2o_scores(attn) if base_name == "h2o" else scores.tova_scores(attn)
    torch.testing.assert_close(scores.caote_scores(base, values, group),
                               naive.caote_scores(base, values, group), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(scores.fastcaote_scores(base, values, group),
                               naive.fastcaote_scores(base, values, group), rtol=1e-9, atol=1e-12)


def _single_query(seed: int, t: int, d: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(d, generator=gen, dtype=torch.float64) * 1.5
    k = torch.randn(t, d, generator=gen, dtype=torch.float64)
    v = torch.randn(t, d, generator=gen, dtype=torch.float64)
    alpha = (k @ q / d**0.5).softmax(-1)
    return q, k, v, alpha


@CAOTE
@given(st.integers(0, 10_000), st.integers(2, 16), st.integers(1, 6))
def test_closed_form_equals_brute_force(seed: int, t: int, d: int) -> None:
    q, k, v, alpha = _single_query(seed, t, d)
    c = scores.caote_from_weights(alpha.view(1, 1, t), v.view(1, 1, t, d)).view(t)
    full = scores.attention_output(q, k, v)
    for j in range(t):
        keep = torch.arange(t) != j
        brute = (full - scores.attention_output(q, k, v, keep)).norm()
        assert torch.isclose(c[j], brute, rtol=1e-9, atol=1e-12)
        assert abs(naive.brute_force_error(q, k, v, [j]) - float(brute)) < 1e-9


@CAOTE
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(1, 5), st.data())
def test_set_eviction_equals_brute_force(seed: int, t: int, d: int, data: st.DataObject) -> None:
    q, k, v, alpha = _single_query(seed, t, d)
    evict = data.draw(st.sets(st.integers(0, t - 1), min_size=1, max_size=t - 1))
    mask = torch.zeros(t, dtype=torch.bool)
    mask[list(evict)] = True
    shift = scores.eviction_shift(alpha, v, mask)
    brute = scores.attention_output(q, k, v) - scores.attention_output(q, k, v, ~mask)
    torch.testing.assert_close(shift, brute, rtol=1e-9, atol=1e-12)


def wrong_caote(alpha: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The closed form without the 1/(1-α) renormalisation: α_j ‖o - v_j‖."""
    out = alpha @ values
    return alpha * (out - values).norm(dim=-1)


def test_wrong_formula_fails_brute_force() -> None:
    """The brute-force check discriminates: dropping 1/(1-α) is caught on a peaked softmax."""
    q, k, v, alpha = _single_query(seed=3, t=6, d=4)
    full = scores.attention_output(q, k, v)
    brute = torch.stack([(full - scores.attention_output(q, k, v, torch.arange(6) != j)).norm()
                         for j in range(6)])
    right = scores.caote_from_weights(alpha.view(1, 1, 6), v.view(1, 1, 6, 4)).view(6)
    torch.testing.assert_close(right, brute, rtol=1e-9, atol=1e-12)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(wrong_caote(alpha, v), brute, rtol=1e-6, atol=1e-9)


@CAOTE
@given(st.integers(0, 10_000), st.integers(2, 10), st.integers(1, 5))
def test_fastcaote_equals_caote_under_uniform_attention(seed: int, t: int, d: int) -> None:
    v = torch.randn(1, 1, t, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    uniform = torch.ones(1, 1, t, dtype=torch.float64)
    torch.testing.assert_close(scores.caote_scores(uniform, v), scores.fastcaote_scores(uniform, v))


@CAOTE
@given(instances(), st.floats(0.01, 100.0), st.floats(-5.0, 5.0))
def test_invariances(inst: dict, scale: float, shift: float) -> None:
    """Meta-CAOTE ignores positive base rescaling and a common value shift; TOVA meta = plain."""
    attn, values = inst["attn"], inst["values"]
    base = scores.h2o_scores(attn)
    c = scores.caote_scores(base, values)
    torch.testing.assert_close(scores.caote_scores(base * scale, values), c)
    torch.testing.assert_close(scores.caote_scores(base, values + shift), c)
    tova = scores.tova_scores(attn)
    plain = scores.reduce_group(scores.caote_from_weights(tova, values), values.shape[1], "rss")
    torch.testing.assert_close(scores.caote_scores(tova, values), plain)


@CAOTE
@given(st.integers(0, 10_000), st.integers(2, 10), st.integers(1, 4), st.integers(1, 4))
def test_gqa_rss_is_group_error_norm(seed: int, t: int, d: int, g: int) -> None:
    """rss over the group = ‖concat_h (o_h - o'_h,j)‖ for a KV entry shared by G query heads."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(g, d, generator=gen, dtype=torch.float64)
    k = torch.randn(t, d, generator=gen, dtype=torch.float64)
    v = torch.randn(t, d, generator=gen, dtype=torch.float64)
    alpha = (q @ k.T / d**0.5).softmax(-1)  # [G, T]
    c = scores.caote_scores(alpha.unsqueeze(0), v.view(1, 1, t, d), "rss").view(t)
    kk, vv = k.expand(g, t, d), v.expand(g, t, d)
    for j in range(t):
        keep = (torch.arange(t) != j).expand(g, t)
        delta = scores.attention_output(q, kk, vv) - scores.attention_output(q, kk, vv, keep)
        assert torch.isclose(c[j], delta.norm(), rtol=1e-9, atol=1e-12)


NEEDS_TRITON = pytest.mark.skipif(kernel.triton is None, reason="Triton is not installed")
DOMINANT_SCORERS = [
    pytest.param(lambda w, v: VARIANTS["caote"](w, v, "rss"), id="evictor"),
    pytest.param(naive.caote_scores, id="naive"),
    pytest.param(lambda w, v: scores.caote_scores(w, v, scorer=kernel.caote_scores_fused),
                 id="triton", marks=NEEDS_TRITON),
]


@pytest.mark.parametrize("scorer", DOMINANT_SCORERS)
@pytest.mark.parametrize("gap", [10.0, 18.0, 25.0, 60.0])
def test_dominant_token_keeps_its_exact_score(scorer, gap: float) -> None:
    """One query, token 0 ahead by ``gap`` logits: from fp32 weights (α_0 rounds to 1 above a
    gap of ~17) the scores still equal the float64 errors recomputed from the logits, and the
    token evicted is the exact argmin, never the dominant one."""
    t, d = 8, 4
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(t, generator=gen, dtype=torch.float64)
    logits[0] += gap
    v = torch.randn(t, d, generator=gen, dtype=torch.float64)
    u = v - v[0]  # outputs move with a common value shift; u_0 = 0 keeps o - o'_j ~ 1e-26 exact
    full = logits.softmax(-1) @ u
    exact = torch.stack([(full - logits[keep].softmax(-1) @ u[keep]).norm()
                         for keep in (torch.arange(t) != j for j in range(t))])
    c = scorer(logits.float().softmax(-1).view(1, 1, t), v.float().view(1, 1, t, d)).view(t)
    torch.testing.assert_close(c.double(), exact, rtol=1e-4, atol=0.0)
    keep = select_keep(c.view(1, 1, t), torch.zeros(1, 1, t, dtype=torch.bool), t - 1)
    assert set(range(t)) - set(keep.view(-1).tolist()) == {int(exact.argmin())}


@pytest.mark.parametrize("scorer", DOMINANT_SCORERS)
def test_token_holding_all_weight_is_never_evicted(scorer) -> None:
    """Other weights underflow to 0 (or T = 1): evicting the holder leaves nothing, c = +inf."""
    w = torch.tensor([[[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]).view(2, 1, 3)
    v = torch.randn(2, 1, 3, 4, generator=torch.Generator().manual_seed(1))
    c = scorer(w, v)
    assert c[0, 0].tolist() == [0.0, float("inf"), 0.0]
    assert c[1, 0].tolist() == [float("inf"), 0.0, 0.0]
    assert scorer(torch.ones(1, 1, 1), v[:1, :, :1]).tolist() == [[[float("inf")]]]


def test_select_keep_protects_and_sorts() -> None:
    positions = torch.arange(10).view(1, 1, 10).expand(1, 2, 10)
    s = torch.tensor([[[0.0, 9, 8, 7, 6, 5, 4, 3, 2, 1], [5.0, 1, 2, 3, 4, 0, 6, 7, 8, 9]]])
    prot = protected_mask(positions, newest=9, sink=1, recent=2)
    keep = select_keep(s, prot, budget=5)
    assert keep[0, 0].tolist() == [0, 1, 2, 8, 9]
    assert keep[0, 1].tolist() == [0, 6, 7, 8, 9]
    # a NaN score (an overflowed cache) ranks last: topk put it above +inf, evicting index 0
    keep = select_keep(torch.tensor([[[0.1, float("nan"), 0.2, 0.3]]]),
                       torch.tensor([[[True, False, False, True]]]), 2)
    assert keep[0, 0].tolist() == [0, 3]


@pytest.mark.parametrize("inf_at", [(1, 2), (1, 3), (2, 3)])
def test_an_infinite_score_never_displaces_a_protected_entry(inf_at: tuple[int, int]) -> None:
    """CAOTE scores +inf where one query head puts its whole weight on a token (r_j = 0 < w_j:
    the others' fp32 weights underflow past a logit gap of ~104). Protection also reads as
    +inf, so with sink + recent = budget - 1 and two such tokens topk broke the tie by evicting
    a sink or recent entry."""
    positions = torch.arange(6).view(1, 1, 6)
    prot = protected_mask(positions, newest=5, sink=1, recent=2)  # 0, 4, 5
    s = torch.tensor([[[0.5, 0.2, 0.3, 0.1, 0.4, 0.6]]])
    s[0, 0, list(inf_at)] = float("inf")
    keep = select_keep(s, prot, budget=4)[0, 0].tolist()
    assert {0, 4, 5} <= set(keep)
    assert set(keep) - {0, 4, 5} <= set(inf_at)


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"budget 16 must exceed .* above 32"):
        EvictionConfig(budget=16, base="snapkv", snapkv_window=32)
    with pytest.raises(ValueError, match="variant must be one of"):
        EvictionConfig(budget=16, variant="exact")
    assert EvictionConfig(budget=64, base="h2o", variant="fastcaote").name == "H2O+FastCAOTE"


@pytest.mark.parametrize("field,value,message", [
    ("snapkv_kernel", 4, "snapkv_kernel must be an odd number >= 1, got 4"),
    ("snapkv_kernel", 0, "snapkv_kernel must be an odd number >= 1, got 0"),
    ("snapkv_window", 0, "snapkv_window must be at least 1"),
    ("snapkv_pooling", "min", "snapkv_pooling must be one of"),
    ("group", "sum", "group must be one of"),
    ("sink", -1, "sink must be >= 0"),
    ("recent", -2, "recent must be >= 0"),
    ("block_size", 0, "block_size must be at least 1"),
])
def test_config_names_the_bad_field(field: str, value: object, message: str) -> None:
    """Refused at construction, naming the field: an even kernel would pool T + 1 scores and
    fail at the first eviction, window 0 would read as every query."""
    with pytest.raises(ValueError, match=message):
        EvictionConfig(**{"budget": 40, "base": "snapkv", "snapkv_window": 8, field: value})


@pytest.mark.parametrize("kernel", [0, 2, 4])
def test_snapkv_scores_refuse_an_even_or_empty_kernel(kernel: int) -> None:
    attn = torch.rand(1, 1, 3, 10).softmax(-1)
    with pytest.raises(ValueError, match="kernel must be an odd number"):
        scores.snapkv_scores(attn, window=2, kernel=kernel)
