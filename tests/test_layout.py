"""The depthwise convolutions of generated modules read and write channels-last views of the
[B, N, C] activations: no layout copies, at batch 1 too (where transpose + reshape would give a
batch stride PyTorch reads as NCHW, and oneDNN would copy in and out)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import profile

import padre_compiler as pc
from padre_compiler import dsl


def _clones(module: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), profile() as prof:
        module(x)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::clone")


def _gated_sequence() -> pc.Spec:
    """Causal 1-D depthwise convs (hyena's short filters, without its FFT long conv, whose
    internals reshape on their own)."""
    x = dsl.tokens("sequence")
    y = dsl.dwconv1d(dsl.dense(x, "b1", bias=True), "a1", kernel=3, causal=True, bias=True)
    z = dsl.dwconv1d(y, "a2", kernel=5) * dsl.dense(x, "b2")
    return dsl.spec("gated", layout="sequence", output=dsl.dense(z, "proj"))


@pytest.mark.parametrize(("spec", "grid"), [("padre3", (8, 8)), ("conv2former", (8, 8)),
                                            ("gated", None)])
@pytest.mark.parametrize("batch", [1, 2])
def test_depthwise_convs_make_no_layout_copies(spec: str, grid, batch: int) -> None:
    module = pc.compile(_gated_sequence() if spec == "gated" else spec, dim=32,
                        grid=grid).eval()
    assert _clones(module, torch.randn(batch, 64, 32)) == 0


def test_the_idiomatic_layout_does_copy_at_batch_1() -> None:
    """What the test above guards against: transpose + reshape reads as NCHW at batch 1."""
    x = torch.randn(1, 64, 32)
    weight = torch.randn(32, 1, 5, 5)

    class Idiomatic(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            x4 = t.transpose(1, 2).reshape(1, 32, 8, 8)
            y = torch.nn.functional.conv2d(x4, weight, padding=2, groups=32)
            return y.flatten(2).transpose(1, 2)

    assert _clones(Idiomatic(), x) > 0
