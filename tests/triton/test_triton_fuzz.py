"""`padre fuzz --backend triton` under the interpreter: examples draw the conv form, so both
kernel families (direct, tensor-core Toeplitz, with and without the slab, whole or in two column
parts) meet the float64 reference; with --grad their derived backward kernels meet float64
autograd."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import replace

import pytest

from padre_compiler.compiler import as_spec, generate, load_source
from padre_compiler.verify.fuzz import BLOCKS, Example, Harness, boundary_examples, fuzz


def test_triton_fuzz_passes_in_every_conv_form() -> None:
    forms: set[str] = set()
    report = fuzz("padre3", backend="triton", examples_n=8, seed=1, boundary=False,
                  on_example=lambda outcome: forms.add(outcome.example.conv_form))
    assert report.failure is None and report.examples > 0
    assert forms == {"auto", "direct", "toeplitz", "slab", "slab2"}


def test_triton_fuzz_sees_a_wrong_band_operand_only_in_the_toeplitz_form(monkeypatch) -> None:
    """The band shifted by one column: the Toeplitz examples fail, the direct ones still pass
    (the check reaches the tensor-core kernel, and only it)."""
    harness = Harness(as_spec("padre3"), "triton")
    # the custom op is registered once per process, by whichever generated module loaded first
    # (the same kernel text), and without gradients the module calls its own implementation
    # (custom_op_caller): shift the band in the globals both read
    from torch._library.custom_ops import OPDEFS

    op = OPDEFS[f"{harness.cls.forward.__globals__['DWCONV_OPS']}::dwconv_hadamard_fwd"]
    op = op._init_fn.__globals__
    for namespace in (op, harness.cls.forward.__globals__):
        real = namespace["toeplitz_operand"]
        monkeypatch.setitem(namespace, "toeplitz_operand",
                            lambda w, bk, bw, shift, dtype, real=real: real(w, bk, bw, shift + 1,
                                                                            dtype))
    example = dict(dim=4, tokens=24, grid=(3, 8), batch=1, dtype="float32", seed=5)
    assert not harness.check(Example(**example, conv_form="toeplitz")).ok
    assert harness.check(Example(**example, conv_form="direct")).ok


@pytest.mark.parametrize("name", ["hyena", "mamba_lti"])
def test_triton_fuzz_passes_on_the_long_convolution_specs(name: str) -> None:
    """Both dtypes the interpreter runs (fp16 included: the FFTs take fp32 operands)."""
    dtypes: set[str] = set()
    report = fuzz(name, backend="triton", examples_n=8, seed=1, boundary=False,
                  on_example=lambda outcome: dtypes.add(outcome.example.dtype))
    assert report.failure is None and report.examples > 0
    assert dtypes == {"float32", "float16"}


def test_triton_fuzz_sees_a_long_convolution_that_drops_its_skip_term(monkeypatch) -> None:
    """long_conv_out without Hyena's skip term d ⊙ x: the fuzz check fails."""
    harness = Harness(as_spec("hyena"), "triton")
    from torch._library.custom_ops import OPDEFS

    op = OPDEFS[f"{harness.cls.forward.__globals__['LONG_CONV_OPS']}::long_conv_hadamard"]
    op = op._init_fn.__globals__
    for namespace in (op, harness.cls.forward.__globals__):
        real = namespace["long_conv_out"]
        monkeypatch.setitem(namespace, "long_conv_out",
                            lambda yp, xp, d, *rest, real=real: real(yp, xp, None, *rest))
    example = Example(dim=4, tokens=24, grid=None, batch=1, dtype="float32", seed=5,
                      conv_form="auto")
    assert not harness.check(example).ok


def test_triton_gradient_fuzz_passes_and_sees_a_wrong_weight_gradient(monkeypatch) -> None:
    """--grad on the Triton backend: padre3's backward kernels pass; the tensor-core weight
    gradient scaled by 1.01 fails in the Toeplitz form, naming a conv's taps, and the direct
    form (whose weight gradient is its backward kernel's own) still passes."""
    report = fuzz("padre3", backend="triton", examples_n=4, seed=1, grad=True, boundary=False)
    assert report.failure is None and report.examples > 0
    harness = Harness(as_spec("padre3"), "triton")
    from torch._library.custom_ops import OPDEFS

    op = OPDEFS[f"{harness.cls.forward.__globals__['DWCONV_OPS']}::dwconv_hadamard_fwd"]
    op = op._init_fn.__globals__
    for form in {id(ns["TENSOR_CORES"]): ns["TENSOR_CORES"]
                 for ns in (op, harness.cls.forward.__globals__)}.values():
        real = form.wgrad

        def scaled(x, du, dw, *rest, real=real):
            real(x, du, dw, *rest)
            dw.mul_(1.01)

        monkeypatch.setattr(form, "wgrad", scaled)
    example = Example(dim=4, tokens=24, grid=(3, 8), batch=2, dtype="float32", seed=5,
                      conv_form="toeplitz", grad=True)
    outcome = harness.check(example)
    assert not outcome.ok and outcome.tensor.endswith("token_weight"), outcome
    assert harness.check(replace(example, conv_form="direct")).ok


def _module(name: str):
    """The generated Triton module of a bundled spec (its launchers' tile functions)."""
    return sys.modules[Harness(as_spec(name), "triton").cls.__module__]


def test_the_blocks_bound_every_launch() -> None:
    """BLOCKS holds each device's largest token and channel block, so that the boundary
    examples reach a second block of every kernel: the direct conv's tiles, the Toeplitz
    form's rows and columns (its grid side past both), the head kernels' chunks, the long
    convolution's tiles."""
    conv, heads, long_conv = _module("padre3"), _module("sima"), _module("hyena")
    for device, gpu in (("cpu", False), ("cuda", True)):
        tokens, channels = BLOCKS[device]
        side = math.isqrt(tokens) + 1
        for n, c in ((2**20, 2**14), (side * side, 8), (6, channels + 1)):
            tile = conv.dwconv_hadamard_config(n, c, gpu=gpu)
            assert tile["BT"] <= tokens and tile["BC"] <= channels
            band = conv.dwconv_toeplitz_config(c, 11, gpu=gpu, rows=side)
            assert band["BH"] < side and band["BW"] < side and band["BC"] <= channels
            assert heads.head_config(n, 64, gpu=gpu)["CHUNK"] <= tokens
        assert long_conv.LONG_CONV_TILE["BT"] <= tokens
        assert long_conv.LONG_CONV_TILE["BC"] <= channels


BOUNDARY = ["padre3", "hyena", "sima", "castling_vit", "mamba_lti"]


@pytest.mark.parametrize("name", BOUNDARY)
def test_the_boundary_examples_pass(name: str) -> None:
    """Every kernel family one past its blocks on this device (the drawn sizes stay inside
    one), each example judged."""
    harness = Harness(as_spec(name), "triton")
    examples = boundary_examples(harness)
    assert len(examples) == (4 if name == "padre3" else 2)
    for example in examples:
        outcome = harness.check(example)
        assert outcome.ok and outcome.judged, outcome


@pytest.mark.parametrize("name", BOUNDARY)
def test_the_boundary_gradients_pass(name: str) -> None:
    harness = Harness(as_spec(name), "triton")
    for example in boundary_examples(harness, grad=True):
        outcome = harness.check(example)
        assert outcome.ok and outcome.judged, outcome


def _mutant(name: str, old: str, new: str) -> Harness:
    """A harness whose module is the generated one with `old` replaced by `new` (its custom
    ops renamed, so that they do not meet the real ones registered under the same name)."""
    harness = Harness(as_spec(name), "triton")
    source = generate(name, dim=16, grid=(4, 4) if name == "padre3" else None,
                      backend="triton").source
    assert old in source
    source = re.sub(r"(_OPS = 'padre_\w+)'", r"\1_mutant'", source.replace(old, new))
    harness.cls = getattr(load_source(source, f"{name}_mutant"), harness.cls.__name__)
    return harness


# bugs only a second block shows, each passed by every check before the boundary examples (a
# verification review): the fuzzer drew at most 17 tokens, a 6 x 16 grid, 12 heads' width
MUTANTS = [("sima", "o_t = i_k * CHUNK + t0", "o_t = i_k * BT + t0"),
           ("padre3", 'grid = (b * cdiv(n, cfg["BT"]), cdiv(c, cfg["BC"]))',
            'grid = (b * max(1, n // cfg["BT"]), max(1, c // cfg["BC"]))'),
           ("hyena", "start(long_conv_out_kernel, (bsz * cdiv(n, bt), cdiv(c, bc)))(",
            "start(long_conv_out_kernel, (bsz * max(1, n // bt), max(1, c // bc)))(")]
# a launcher that swapped height and width: inside one block, or on a square grid, both count
# the same tiles
SWAPPED = ("padre3", 'cdiv(rows, cfg["BH"]) * cdiv(width, cfg["BW"])',
           'cdiv(rows, cfg["BH"]) * cdiv(height, cfg["BW"])')


@pytest.mark.parametrize(("name", "old", "new"), [*MUTANTS, SWAPPED],
                         ids=[*(m[0] for m in MUTANTS), "padre3-swapped"])
def test_the_boundary_examples_see_what_one_block_hides(name: str, old: str, new: str) -> None:
    harness = _mutant(name, old, new)
    drawn = Example(dim=8, tokens=17, grid=None, batch=2, dtype="float32", seed=3)
    if name == "padre3":
        form = "toeplitz" if "cdiv(rows" in old else "direct"
        drawn = replace(drawn, tokens=96, grid=(6, 16), conv_form=form)
    assert harness.check(drawn).ok
    assert not all(harness.check(ex).ok for ex in boundary_examples(harness))


def test_the_boundary_gradients_see_what_one_block_hides() -> None:
    """The tensor-core weight gradient's launcher counting whole column stripes only: the
    forward never runs it, and a drawn grid of whole stripes hides it."""
    harness = _mutant("padre3", 'stripes, blocks = cdiv(width, cfg["BW"]), cdiv(c, cfg["BC"])',
                      'stripes, blocks = max(1, width // cfg["BW"]), cdiv(c, cfg["BC"])')
    drawn = Example(dim=8, tokens=96, grid=(6, 16), batch=2, dtype="float32", seed=3,
                    conv_form="toeplitz", grad=True)
    assert harness.check(drawn).ok
    assert harness.check(replace(drawn, grad=False)).ok
    found = [harness.check(ex) for ex in boundary_examples(harness, grad=True)
             if ex.conv_form == "toeplitz"]
    assert any(not o.ok and o.tensor.endswith("token_weight") for o in found), found
