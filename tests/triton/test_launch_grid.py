"""Launch grids within CUDA's limits (backends/triton/launch.py): 2**31 - 1 programs on axis 0,
65,535 on axes 1 and 2. A channel axis past its limit folds onto axis 2 and the kernels give
the unfolded grid's values (run in the interpreter with the limits made small); a grid no fold
makes legal is refused by name, as a GPU would refuse the launch; the legality checker sees
the same rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from padre_compiler.backends.triton import launch, legality
from padre_compiler.cli import codegen_path
from tests.helpers import generated_runtime

SMALL = (2**31 - 1, 2, 65535)  # axis 1 past 2 programs folds: 3 channel blocks become 2 x 2


class Spy:
    """A Triton kernel whose launches (grid, keyword arguments) are recorded."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, []
        self.__name__, self.arg_names = kernel.__name__, kernel.arg_names  # as start reads them

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return run


def test_a_grid_within_the_limits_is_launched_as_it_is() -> None:
    for grid in ((7,), (2**31 - 1, 65535), (1, 65535, 65535)):
        assert launch.legal_grid("k", grid) == (grid, False)


@pytest.mark.parametrize("n", [65536, 2 * 65535 + 1, 262141, 65535**2])
def test_a_channel_axis_past_its_limit_folds_onto_axis_2(n: int) -> None:
    """(g0, n) -> (g0, p, q): p, q within the limit and p q - n < q programs past n."""
    (g0, p, q), fold = launch.legal_grid("k", (3, n))
    assert fold and g0 == 3 and p <= 65535 and q <= 65535 and 0 <= p * q - n < q


def test_the_folded_index_covers_every_block_once(monkeypatch) -> None:
    """grid_axis1's program_id(1) + p * program_id(2) over the folded grid: each logical block
    0..n-1 exactly once, the rest past n (masked channels), at small limits."""
    monkeypatch.setattr(launch, "GRID_LIMITS", (100, 4, 3))
    for n in range(5, 13):
        (_, p, q), fold = launch.legal_grid("k", (1, n))
        index = sorted(i1 + p * i2 for i1 in range(p) for i2 in range(q))
        assert fold and index[:n] == list(range(n)) and all(i >= n for i in index[n:])
    with pytest.raises(launch.GridLimitError, match="13 programs on axis 1, past the 12"):
        launch.legal_grid("k", (1, 13))


@pytest.mark.parametrize(("grid", "axis", "limit"), [
    ((2**31,), 0, 2**31 - 1), ((2**31, 1), 0, 2**31 - 1), ((1, 65535**2 + 1), 1, 65535**2),
    ((1, 65536, 1), 1, 65535), ((1, 1, 65536), 2, 65535)])
def test_a_grid_no_fold_makes_legal_is_refused_by_name(grid, axis: int, limit: int) -> None:
    """Axis 0 holds each outer index's tiles (nothing left to fold into); axis 1 folds once,
    and not where the grid's axis 2 is its own."""
    with pytest.raises(launch.GridLimitError,
                       match=f"my_kernel: its launch grid needs {grid[axis]:,} programs on axis "
                             f"{axis}, past the {limit:,} a GPU launch holds"):
        launch.legal_grid("my_kernel", grid)


def test_the_legality_checker_rejects_a_grid_past_the_limits() -> None:
    source = codegen_path("padre3", "triton").read_text()
    m = generated_runtime("padre3", 4, (2, 3))
    cfg = m.dwconv_hadamard_config(3136, 384, gpu=True)

    def problems(grid):
        return legality.check_launch(source, "dwconv_hadamard_fwd_kernel", cfg,
                                     num_warps=cfg["num_warps"], dot_tiles=m.DOT_TILES,
                                     grid=grid)

    assert problems((2**31 - 1, 65535, 65535)) == []
    assert problems((2**31, 1)) == [
        "dwconv_hadamard_fwd_kernel: grid axis 0 has 2,147,483,648 programs (> 2,147,483,647)"]
    assert problems((1, 65536)) == [
        "dwconv_hadamard_fwd_kernel: grid axis 1 has 65,536 programs (> 65,535)"]
    assert problems((1, 1, 65536)) == [
        "dwconv_hadamard_fwd_kernel: grid axis 2 has 65,536 programs (> 65,535)"]
    assert problems((1, 1, 1, 1)) == [
        "dwconv_hadamard_fwd_kernel: a launch grid has at most 3 axes, not 4"]


def _grid_problems(source: str, m, spies: dict[str, Spy]) -> list[str]:
    """The legality checker's grid problems, at the SMALL limits, of every recorded launch."""
    small = dataclasses.replace(legality.H100, grid=SMALL)
    found = []
    for name, spy in spies.items():
        for grid, kw in spy.launches:
            consts = {k: v for k, v in kw.items() if isinstance(v, int)}
            found += [p for p in legality.check_launch(
                source, name, consts, num_warps=kw["num_warps"], dot_tiles=m.DOT_TILES,
                limits=small, grid=grid) if "grid" in p]
    return found


@pytest.mark.parametrize("form", ["direct", "toeplitz"])
def test_conv_kernels_on_a_folded_channel_axis_give_the_unfolded_values(form: str,
                                                                        monkeypatch) -> None:
    """Forward and backward (atomic and deterministic sums) of a gated, accumulated conv of 300
    channels (the CPU's blocks: 3 of BC = 128 in the direct kernels, 5 of 64 in the Toeplitz
    ones): with axis 1 limited to 2 programs every launch folds onto axis 2, one program past
    the blocks, and the values are the unfolded grid's; the legality checker finds axis 1
    past the limit in the unfolded launches and in none of the folded ones."""
    m = generated_runtime("padre3", 4, (2, 3))
    monkeypatch.setenv("PADRE_TRITON_CONV", form)
    names = {"direct": ("dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel"),
             "toeplitz": ("dwconv_toeplitz_fwd_kernel", "dwconv_hadamard_bwd_kernel",
                          "dwconv_toeplitz_wgrad_kernel")}[form]
    spies = {name: Spy(getattr(m, name)) for name in names}
    for name, spy in spies.items():
        monkeypatch.setattr(m, name, spy)
    c = 300
    gen = torch.Generator().manual_seed(21)
    x, gate, acc, dz, do = (torch.randn(2, 12, c, generator=gen) for _ in range(5))
    weight, bias, scale, in_bias = (torch.randn(*s, generator=gen)
                                    for s in ((c, 3, 3), (c,), (c,), (c,)))
    args = (x, weight, bias, gate, acc, None, scale)

    def run() -> list[torch.Tensor]:
        outs = list(m._dwconv_hadamard_impl(*args, 3, 4, 1, 1, True, True, in_bias)[:2])
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            try:
                outs += m._dwconv_hadamard_bwd_impl(*args, dz, do, 3, 4, 1, 1, in_bias)
            finally:
                torch.use_deterministic_algorithms(False)
        return outs

    source = codegen_path("padre3", "triton").read_text()
    want = run()
    assert _grid_problems(source, m, spies)  # axis 1 holds 3 programs
    for spy in spies.values():
        spy.launches.clear()
    monkeypatch.setattr(m, "GRID_LIMITS", SMALL)
    got = run()
    for spy in spies.values():
        assert spy.launches and all(len(g) == 3 and kw["FOLD"] for g, kw in spy.launches)
    assert _grid_problems(source, m, spies) == []
    for a, e in zip(got, want, strict=True):
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-5)


def test_long_conv_kernels_on_a_folded_channel_axis_give_the_unfolded_values(
        monkeypatch) -> None:
    """Hyena's long convolution, forward and backward, with 3 channel blocks of 32 on an axis
    1 limited to 2 programs: the same values, every two-axis launch folded."""
    m = generated_runtime("hyena", 8)
    names = ("long_conv_in_kernel", "long_conv_out_kernel")
    spies = {name: Spy(getattr(m, name)) for name in names}
    for name, spy in spies.items():
        monkeypatch.setattr(m, name, spy)
    gen = torch.Generator().manual_seed(22)
    c = 70
    a, b, gate, do = (torch.randn(2, 9, c, generator=gen) for _ in range(4))
    filt, skip = torch.randn(c, 9, generator=gen), torch.randn(c, generator=gen)

    def run() -> list[torch.Tensor]:
        o, y, xf = m._long_conv_hadamard_impl(a, b, filt, skip, gate, keep=True)
        return [o, *m._long_conv_hadamard_bwd_impl(a, b, filt, skip, gate, y, xf, do)]

    want = run()
    for spy in spies.values():
        spy.launches.clear()
    monkeypatch.setattr(m, "GRID_LIMITS", SMALL)
    got = run()
    for spy in spies.values():
        assert spy.launches and all(g[1:] == (2, 2) and kw["FOLD"] for g, kw in spy.launches)
    for g, e in zip(got, want, strict=True):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)


def test_an_axis_0_past_its_limit_is_refused_before_any_launch(monkeypatch) -> None:
    """Every family's launches, at an axis-0 limit of 2 programs: the error names the kernel;
    the Toeplitz launcher does not take it for a compiler's rejection (no form given up)."""
    from padre_compiler.caote import kernel as caote

    def refused(module, kernel: str):  # each generated module defines its GridLimitError
        return pytest.raises(module.GridLimitError,
                             match=f"{kernel}: its launch grid needs 3 programs on axis 0, "
                                   "past the 2 a GPU launch holds")

    limits = (2, 65535, 65535)
    conv = generated_runtime("padre3", 4, (2, 3))
    monkeypatch.setattr(conv, "GRID_LIMITS", limits)
    x, weight = torch.randn(3, 12, 4), torch.randn(4, 3, 3)
    with refused(conv, "dwconv_hadamard_fwd_kernel"):
        conv.dwconv_hadamard_launch(x, weight, None, None, None, None, None, 3, 4, 1, 1,
                                    torch.empty_like(x), None)
    monkeypatch.delenv("PADRE_TRITON_CONV", raising=False)
    monkeypatch.setattr(conv, "conv_form", lambda *a, **kw: "toeplitz")
    monkeypatch.setattr(conv, "TOEPLITZ_FAILED", {})
    x = torch.randn(3, 16 * 16, 4)  # 3 row tiles of 16 (the CPU's BH) over 3 x 16 rows
    with refused(conv, "dwconv_toeplitz_fwd_kernel"):
        conv.dwconv_hadamard_launch(x, weight, None, None, None, None, None, 16, 16, 1, 1,
                                    torch.empty_like(x), None)
    assert conv.TOEPLITZ_FAILED == {}
    attention = generated_runtime("sima", 16)
    monkeypatch.setattr(attention, "GRID_LIMITS", limits)
    q = torch.randn(3, 5, 16)
    with refused(attention, "head_state_kernel"):
        attention.linear_attention(q, q, q, 1)
    long_conv = generated_runtime("hyena", 8)
    monkeypatch.setattr(long_conv, "GRID_LIMITS", limits)
    with refused(long_conv, "long_conv_in_kernel"):
        long_conv._long_conv_hadamard_impl(torch.randn(3, 5, 8), None, torch.randn(8, 5), None,
                                           None)
    monkeypatch.setattr(launch, "GRID_LIMITS", limits)
    with refused(launch, "caote_weights_kernel"):
        caote.caote_scores_fused(torch.rand(3, 1, 4), torch.randn(3, 1, 4, 8))


def test_a_kernel_without_fold_is_refused_rather_than_folded(monkeypatch) -> None:
    """The CAOTE kernels keep their chunks on axis 1 and declare no FOLD: a folded launch
    would fail on a GPU (an undeclared keyword) and, in the interpreter, which drops it, score
    the chunks on axis 1 only. Past the limit they are refused by name; a kernel with FOLD
    folds."""
    from padre_compiler.caote import kernel as caote

    monkeypatch.setattr(launch, "GRID_LIMITS", (2**31 - 1, 2, 65535))
    monkeypatch.setattr(caote, "token_split", lambda t, rows, device: (3, 32))
    with pytest.raises(launch.GridLimitError,
                       match=r"caote_weights_kernel: .* 3 programs on axis 1, past the 2 .*"
                             r"reads no folded axis"):
        caote.caote_scores_fused(torch.rand(1, 1, 65), torch.randn(1, 1, 65, 8))
    assert launch.legal_grid("k", (1, 3), foldable=True) == ((1, 2, 2), True)
    with pytest.raises(launch.GridLimitError, match="run the batch in parts"):
        launch.legal_grid("k", (2**31,))
