"""A 2-D conv's part of a fused dense map gets its own map again (layout.unfuse_conv_inputs), so
dense_for_conv can store it channel-major: the graph stays equal to the spec, the module to the
PyTorch backend's, and the conv's launch on a GPU reads aligned strips."""

from __future__ import annotations

import pytest
import torch

import padre_compiler as pc
from padre_compiler import dsl
from padre_compiler.backends.triton.layout import _block, conv_source, unfuse_conv_inputs
from padre_compiler.compiler import generate
from padre_compiler.verify.certificate import certify_graphs


def _three_maps() -> dsl.Expr:
    """conv(x A) * (x B) + x C: fuse_siblings makes A, B and C one map of three parts."""
    x = dsl.tokens("grid2d")
    conv = dsl.dwconv2d(dsl.dense(x, "a", bias=True), "k", kernel=3, bias=True)
    gate, other = dsl.dense(x, "b", bias=True), dsl.dense(x, "c", bias=True)
    return dsl.spec("three_maps", layout="grid2d", output=dsl.dense(conv * gate + other, "p"))


@pytest.mark.parametrize("spec", ["conv2former", "conv2former_gelu", "three_maps"])
def test_the_conv_part_is_a_map_of_its_own(spec) -> None:
    """After unfuse_conv_inputs the conv reads (through Conv2Former-GELU's polynomial) a dense
    map of leaf parameters; the other parts stay one map (three_maps: B and C, split in two);
    the graph certifies equal to the spec, and the Triton module computes the PyTorch
    backend's output and gradients in float64."""
    target = _three_maps() if spec == "three_maps" else spec
    result = generate(target, dim=8, grid=(4, 5), backend="triton")
    assert any(result.graph.node(n).op == "split" for n in result.graph.g.nodes)
    g = unfuse_conv_inputs(result.graph)
    (conv,) = g.find("dwconv2d")
    source = g.node(conv_source(g, conv))
    assert source.op == "dense" and all(e.fn == "leaf" for _, e in source.params)
    splits = [g.node(n).a for n in g.g.nodes if g.node(n).op == "split"]
    assert splits == ([{"parts": 2, "index": 0}, {"parts": 2, "index": 1}]
                      if spec == "three_maps" else [])
    cert = certify_graphs(spec, result.records[0].graph, [("unfused", g)], dim=8, tokens=20,
                          grid=(4, 5), trials=2)
    assert cert.passed
    modules = [pc.compile(target, dim=8, grid=(4, 5), backend=b).double()
               for b in ("triton", "torch")]
    modules[1].load_state_dict(modules[0].state_dict())
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    outs = [m(x) for m in modules]
    assert torch.allclose(outs[0], outs[1], atol=1e-10)
    grads = [torch.autograd.grad(o.sum(), list(m.parameters()))
             for o, m in zip(outs, modules, strict=True)]
    for g0, g1 in zip(*grads, strict=True):
        assert torch.allclose(g0, g1, atol=1e-9)


def test_a_block_of_the_wrong_part_fails_the_certificate() -> None:
    """The check above can fail: the conv's map made of its sibling's block (the gate's
    parameters) is caught by the certificate."""
    result = generate("conv2former", dim=8, grid=(4, 5), backend="triton")
    g = result.graph.copy()
    (conv,) = g.find("dwconv2d")
    part = g.inputs(conv)[0]
    fused = g.inputs(part)[0]
    sibling = next(s for s in g.users(fused) if s != part)
    g.replace_uses(part, g.add(_block(g, fused, [sibling]), g.inputs(fused)))
    g.prune()
    cert = certify_graphs("conv2former", result.records[0].graph, [("wrong block", g)], dim=8,
                          tokens=20, grid=(4, 5), trials=2)
    assert not cert.passed


def test_conv2former_stores_the_conv_input_channel_major() -> None:
    """The generated Conv2Former makes the conv's input with dense_for_conv (its bias left to
    the conv) and the gate with F.linear: one GEMM each, where one 2D-wide map made both
    token-major."""
    source = generate("conv2former", dim=384, grid=(56, 56), backend="triton").source
    assert "dense_for_conv(\n            x,\n            self.w1_weight," in source
    assert "F.linear(x, self.w2_weight, self.w2_bias)" in source
    assert "torch.cat([self.w1_weight, self.w2_weight]" not in source
