"""PadreAttention in timm's Attention slot: constructor kwargs, prefix tokens, clear refusals."""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import pytest
import torch

from padre_compiler.errors import ArgumentError, PadreError
from padre_compiler.nn import PadreAttention

TIMM_KWARGS = dict(num_heads=6, qkv_bias=True, qk_norm=False, scale_norm=False, proj_bias=True,
                   attn_drop=0.0, proj_drop=0.0, norm_layer=None, device=None, dtype=None)


def test_accepts_timm_constructor_and_mixes_grid_with_prefix_tokens() -> None:
    attn = PadreAttention(48, **TIMM_KWARGS, grid_size=(4, 5), num_prefix_tokens=1)
    x = torch.randn(2, 21, 48, requires_grad=True)
    y = attn(x)
    assert y.shape == x.shape
    assert torch.allclose(y[:, 0], y[:, 1:].mean(1), atol=1e-6)  # the read-out rule
    y[:, 5].sum().backward()
    assert x.grad[:, 0].abs().sum() == 0  # prefix tokens do not reach the grid
    assert torch.allclose(attn(x, attn_mask=None, is_causal=False), y)


def test_takes_timms_newer_keywords_and_refuses_unknown_ones() -> None:
    """attn_head_dim is softmax attention's (ignored); dim_out must be dim (the mixer keeps
    the width); a misspelt keyword is an error, not ignored."""
    attn = PadreAttention(48, **TIMM_KWARGS, attn_head_dim=16, dim_out=48, grid_size=(2, 2))
    assert attn(torch.randn(1, 4, 48)).shape == (1, 4, 48)
    with pytest.raises(PadreError, match="dim_out=96, but the mixer maps width 48 to 48"):
        PadreAttention(48, dim_out=96, grid_size=(2, 2))
    with pytest.raises(TypeError, match="grid"):
        PadreAttention(48, grid=(2, 2), spec="sima")
    listed = PadreAttention(48, grid_size=[2, 2])  # a list, as a config file gives it
    listed(torch.randn(1, 4, 48))
    assert listed.grid_size == listed.mixer.grid == (2, 2)


def test_grid_tokens_match_the_compiled_mixer() -> None:
    attn = PadreAttention(16, grid_size=(3, 3), num_prefix_tokens=2, spec="conv2former")
    x = torch.randn(1, 11, 16)
    assert torch.allclose(attn(x)[:, 2:], attn.mixer(x[:, 2:]))


def test_refuses_masks_and_wrong_token_counts() -> None:
    """Each bad argument an ArgumentError (a ValueError, as torch's, and a PadreError)."""
    attn = PadreAttention(8, grid_size=(2, 3))
    with pytest.raises(NotImplementedError, match="masks"):
        attn(torch.randn(1, 6, 8), attn_mask=torch.ones(6, 6, dtype=torch.bool))
    with pytest.raises(ArgumentError, match="grid 2 x 3 has 6"):
        attn(torch.randn(1, 7, 8))
    with pytest.raises(PadreError, match=r"pass grid_size=\(H, W\)"):
        PadreAttention(8)  # the keyword named is the constructor's own
    with pytest.raises(PadreError, match="drop grid_size"):
        PadreAttention(16, spec="sima", grid_size=(2, 3))
    # a prefix must be a count that leaves tokens to mix (-1 returned 2 of 5 tokens)
    with pytest.raises(ArgumentError, match="integer >= 0, got -1"):
        PadreAttention(8, spec="hyena", num_prefix_tokens=-1)
    seq = PadreAttention(8, spec="hyena")
    with pytest.raises(ArgumentError, match="leaves none of the 5 tokens"):
        seq(torch.randn(2, 5, 8), num_prefix_tokens=5)
    with pytest.raises(ArgumentError, match="mixes a 1-D token sequence"):
        seq(torch.randn(2, 6, 8), grid_size=(2, 3))


def test_dtype_is_the_mixers_and_the_precision_warning_follows_it() -> None:
    """dtype=float64 builds the mixer in float64, where mamba computes its spec: no warning
    (in float32 compile() warns)."""
    import warnings

    from padre_compiler.errors import PrecisionWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        attn = PadreAttention(8, spec="mamba", num_prefix_tokens=1, dtype=torch.float64)
    x = torch.randn(2, 1 + 5, 8, dtype=torch.float64)
    assert attn(x).dtype == torch.float64


def test_per_call_grid_for_dynamic_image_size() -> None:
    attn = PadreAttention(8, grid_size=(2, 3))
    assert attn(torch.randn(1, 12, 8), grid_size=(3, 4)).shape == (1, 12, 8)
    assert attn.mixer.grid == (2, 3)  # the per-call grid does not stick


def test_calls_at_different_grids_share_nothing() -> None:
    """The per-call grid is an argument of the mixer's forward, not state the call sets and
    restores: concurrent calls at different grids (threads of one server) cannot see each
    other's (when it was state, a review's two threads at (8, 8) and (4, 16) got wrong
    outputs, silently)."""
    attn = PadreAttention(16, spec="conv2former", grid_size=(4, 4))
    seen = []
    attn.mixer.register_forward_pre_hook(lambda m, args: seen.append((m.grid, args[1:])))
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        wide, square = attn(x, grid_size=(2, 8)), attn(x)
        assert torch.equal(wide, attn.mixer(x, (2, 8))) and not torch.allclose(wide, square)
    assert seen[:2] == [((4, 4), ((2, 8),)), ((4, 4), ((4, 4),))]  # the mixer's grid stays


def test_dtype_defaults_to_torchs_default_dtype() -> None:
    """As nn.Linear's: without dtype=, the mixer is built in torch.get_default_dtype() (it was
    float32 whatever the default)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        attn = PadreAttention(8, spec="hyena", num_prefix_tokens=1)
    finally:
        torch.set_default_dtype(previous)
    assert {p.dtype for p in attn.parameters()} == {torch.float64}
    assert attn(torch.randn(2, 6, 8, dtype=torch.float64)).dtype == torch.float64


def test_backend_is_passed_to_compile() -> None:
    """backend= goes to compile(): "triton" builds the fused kernels' module (run by their
    PyTorch twins on the CPU); an unknown one is compile()'s error."""
    assert PadreAttention(8, spec="hyena").mixer.compiled.backend == "torch"
    fused = PadreAttention(8, grid_size=(2, 3), spec="conv2former", backend="triton")
    assert fused.mixer.compiled.kernels and fused(torch.randn(1, 6, 8)).shape == (1, 6, 8)
    with pytest.raises(PadreError, match="unknown backend 'cuda'; available: torch, triton"):
        PadreAttention(8, spec="hyena", backend="cuda")


@pytest.mark.parametrize("grid", [(4,), 4, (4, 4, 1), (4.0, 4), (True, 4), (0, 4), (-4, -4),
                                  "44", None])
def test_grid_size_is_two_positive_integers_at_construction_and_per_call(grid) -> None:
    """(4,) raised IndexError, 4 a TypeError, and per call (-4, -4) matched 16 tokens and
    failed inside the mixer: each is named, and never cast first."""
    error = r"grid_size=.*: give \(H, W\), two positive integers"
    if grid is not None:
        with pytest.raises(PadreError, match=error):
            PadreAttention(8, grid_size=grid)
    attn = PadreAttention(8, grid_size=(4, 4))
    x = torch.randn(1, 16, 8)
    if grid is None:  # per call: this module's own grid
        assert attn(x, grid_size=grid).shape == x.shape
        return
    with pytest.raises(ValueError, match=error):  # a forward's bad argument, as torch's
        attn(x, grid_size=grid)
    assert attn.mixer.grid == (4, 4)


def test_numpy_integers_are_integers() -> None:
    """A numpy integer dim was accepted but numpy grid sizes and prefix counts were not."""
    attn = PadreAttention(np.int64(8), grid_size=(np.int64(2), np.int32(3)),
                          num_prefix_tokens=np.int64(1))
    assert attn.grid_size == (2, 3) and attn.num_prefix_tokens == 1
    assert {type(v) for v in (*attn.grid_size, attn.num_prefix_tokens)} == {int}
    y = attn(torch.randn(1, 8, 8), grid_size=(np.int64(3), np.int64(2)),
             num_prefix_tokens=np.int16(2))
    assert y.shape == (1, 8, 8)
    for prefix in (True, 1.0, -1, "1"):  # ArgumentError: a ValueError and a PadreError
        with pytest.raises(PadreError, match="num_prefix_tokens must be an integer >= 0"):
            PadreAttention(8, spec="hyena", num_prefix_tokens=prefix)
        with pytest.raises(ValueError, match="num_prefix_tokens must be an integer >= 0"):
            attn(torch.randn(1, 7, 8), num_prefix_tokens=prefix)


def test_forward_names_an_input_that_is_not_batch_tokens_channels() -> None:
    """An unbatched [N, C] input was read as N batches of C tokens; a width other than dim
    failed in a matmul."""
    attn = PadreAttention(8, grid_size=(2, 3))
    with pytest.raises(ArgumentError, match=r"x has shape \(6, 8\), but PadreAttention takes "
                       r"\[B, N, C\] .*x\.unsqueeze\(0\)"):
        attn(torch.randn(6, 8))
    with pytest.raises(ArgumentError, match=r"x has 16 channels \(shape \(1, 6, 16\)\), but "
                       "this PadreAttention was built for dim=8"):
        attn(torch.randn(1, 6, 16))


def test_forward_names_an_input_that_is_not_a_tensor() -> None:
    """A nested list was an AttributeError ('list' object has no attribute 'ndim'), a numpy
    array a TypeError from F.linear."""
    attn = PadreAttention(8, grid_size=(2, 3))
    for x in ([[[0.0] * 8] * 6], np.zeros((1, 6, 8), np.float32)):
        with pytest.raises(ArgumentError, match=r"x is a (list|ndarray), but PadreAttention "
                           r"takes a tensor \[B, N, C\]; convert it with torch\.as_tensor"):
            attn(x)


def _train_at_two_grids(spec: str, **compile_kw: Any) -> None:
    """torch.compile (Inductor, on the CPU) of a PadreAttention, forward and backward at its
    grid and then at another one passed per call, as timm's dynamic_img_size does."""
    torch._dynamo.reset()
    attn = PadreAttention(16, spec=spec, grid_size=(4, 4), num_prefix_tokens=1)
    compiled = torch.compile(attn, **compile_kw)
    for grid in ((4, 4), (5, 6)):
        x = torch.randn(2, 1 + grid[0] * grid[1], 16, requires_grad=True)
        y = compiled(x, grid_size=grid)
        y.sum().backward()
        torch.testing.assert_close(y, attn(x, grid_size=grid))
        assert x.grad is not None


@pytest.mark.parametrize("spec", ["padre3", "conv2former"])
def test_trains_under_inductor_at_a_per_call_grid_with_static_shapes(spec: str) -> None:
    """The documented workaround for pytorch/pytorch#185510: dynamic=False compiles one
    graph per grid."""
    _train_at_two_grids(spec, dynamic=False)


@pytest.mark.xfail(raises=torch._dynamo.exc.BackendCompilerFailed, strict=True,
                   reason="pytorch/pytorch#185510: on the recompile the grid ints are dynamic "
                   "and Inductor cannot order the strides of the saved channels-last view of "
                   "_dwconv2d's input (its W * C against C); when this passes, drop the "
                   "README's dynamic=False note")
def test_trains_under_inductor_at_a_per_call_grid_with_dynamic_shapes() -> None:
    _train_at_two_grids("conv2former")


def test_configure_makes_a_class_with_defaults() -> None:
    """For model code that checks issubclass(attn_layer, ...) (a partial fails it): the
    defaults apply unless a call gives its own; an unknown default is refused."""
    from functools import partial

    layer = PadreAttention.configure(grid_size=(4, 4), num_prefix_tokens=1)
    with pytest.raises(TypeError):
        issubclass(partial(PadreAttention, grid_size=(4, 4)), PadreAttention)
    assert issubclass(layer, PadreAttention) and layer.__name__ == "PadreAttention"
    attn = layer(16, num_heads=2)
    assert attn.grid_size == (4, 4) and attn.num_prefix_tokens == 1
    assert attn(torch.randn(2, 17, 16)).shape == (2, 17, 16)
    assert layer(16, grid_size=(2, 8)).grid_size == (2, 8)
    for bad in ({"grid": (4, 4)}, {"dim": 16}, {"self": 3}):
        with pytest.raises(TypeError, match="cannot be given a default"):
            PadreAttention.configure(**bad)
    buffer = io.BytesIO()  # a module of the made class pickles (within the process)
    torch.save(attn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded).__name__ == "PadreAttention" and loaded.grid_size == (4, 4)
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(loaded(x), attn(x))
    assert copy.deepcopy(attn).num_prefix_tokens == 1


def test_a_saved_module_loads_in_a_new_process(tmp_path) -> None:
    """torch.save(model) of a model holding PadreAttention (a configured one too) loads in
    another process: the mixer's generated class, made at run time, could not be imported
    there by name (ModuleNotFoundError: padre_generated_...)."""
    import os
    import subprocess
    import sys

    torch.manual_seed(0)
    plain = PadreAttention(16, grid_size=(2, 3), num_prefix_tokens=1)
    configured = PadreAttention.configure(spec="sima", num_prefix_tokens=2)(16, proj_drop=0.1)
    x = torch.randn(2, 7, 16)
    torch.save({"plain": plain, "configured": configured.eval(), "x": x,
                "y": (plain(x), configured(x))}, tmp_path / "model.pt")
    code = ("import torch, sys\n"
            "d = torch.load(sys.argv[1], weights_only=False)\n"
            "plain, configured = d['plain'], d['configured']\n"
            "torch.testing.assert_close(plain(d['x']), d['y'][0], rtol=0, atol=0)\n"
            "torch.testing.assert_close(configured(d['x']), d['y'][1], rtol=0, atol=0)\n"
            "assert not configured.training and configured.num_prefix_tokens == 2\n"
            "assert plain.mixer.grid == plain.grid_size == (2, 3)\n"
            "print('ok')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.pt")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    twin = copy.deepcopy(plain)  # within the process: the same class, no rebuild
    assert type(twin.mixer) is type(plain.mixer) and torch.equal(twin(x), plain(x))
