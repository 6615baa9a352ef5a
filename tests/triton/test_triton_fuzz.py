"""`padre fuzz --backend triton` under the interpreter: examples draw the conv form, so both
kernel families (direct, tensor-core Toeplitz, with and without the slab, whole or in two column
parts) meet the float64 reference; with --grad their derived backward kernels meet float64
autograd."""

from __future__ import annotations

from dataclasses import replace

import pytest

from padre_compiler.compiler import as_spec
from padre_compiler.verify.fuzz import Example, Harness, fuzz


def test_triton_fuzz_passes_in_every_conv_form() -> None:
    forms: set[str] = set()
    report = fuzz("padre3", backend="triton", examples_n=8, seed=1,
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
    report = fuzz(name, backend="triton", examples_n=8, seed=1,
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
    report = fuzz("padre3", backend="triton", examples_n=4, seed=1, grad=True)
    assert report.failure is None and report.examples > 0
    harness = Harness(as_spec("padre3"), "triton")
    from torch._library.custom_ops import OPDEFS

    op = OPDEFS[f"{harness.cls.forward.__globals__['DWCONV_OPS']}::dwconv_hadamard_fwd"]
    op = op._init_fn.__globals__
    for namespace in (op, harness.cls.forward.__globals__):
        real = namespace["dwconv_toeplitz_wgrad_launch"]

        def scaled(x, du, dw, *rest, real=real):
            real(x, du, dw, *rest)
            dw.mul_(1.01)

        monkeypatch.setitem(namespace, "dwconv_toeplitz_wgrad_launch", scaled)
    example = Example(dim=4, tokens=24, grid=(3, 8), batch=2, dtype="float32", seed=5,
                      conv_form="toeplitz", grad=True)
    outcome = harness.check(example)
    assert not outcome.ok and outcome.tensor.endswith("token_weight"), outcome
    assert harness.check(replace(example, conv_form="direct")).ok
