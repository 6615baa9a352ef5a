"""The layout a conv's input gets: its own channel-major product where a fused map would not give
it one.

A depthwise 2-D conv on tensor cores (dwconv_toeplitz_fwd_kernel) reads its input channel-major:
each grid row of a channel is a strip of contiguous tokens, loaded as 16-byte vectors where the
strips align (`strip_alignment`). `dense_for_conv` gives a dense map's output that layout (the
same GEMM, transposed) where the conv's form is Toeplitz. fuse_siblings makes one wide dense map
of several dense maps of one input, then splits it; a part read by a conv then comes token-major,
with the wide map's channel stride, and the conv gathers its strips element by element
(Conv2Former: z = dwconv(x W1) * (x W2)). `unfuse_conv_inputs` gives each such part its own
dense map again (the inverse of fuse_siblings: the part's parameters are its block of the wide
map's concatenations), which emit_module lowers through `dense_for_conv`; the other parts stay
one wide map. The price is one more read of the input (a GEMM each), paid in every form:
where the conv runs direct (fp32, 1-row grids) dense_for_conv is F.linear, and the split of
one wide map would have done. Per-element maps between
the dense map and the conv (`conv_source`: Conv2Former's GELU polynomial) keep the layout, as
torch's elementwise ops give their output their input's strides.
"""

from __future__ import annotations

from padre_compiler.ir.graph import Graph, Node, freeze
from padre_compiler.ir.params import ParamExpr
from padre_compiler.ir.width import Width

PER_ELEMENT = ("poly",)  # maps of each element alone: their output has their input's layout


def conv_source(g: Graph, conv: int) -> int:
    """The node whose layout the conv's input has: its input, or, through per-element maps
    each read by the next alone, the first map's input."""
    source = g.inputs(conv)[0]
    reader = conv
    while g.node(source).op in PER_ELEMENT and g.users(source) == [reader]:
        source, reader = g.inputs(source)[0], source
    return source


def unfuse_conv_inputs(g: Graph) -> Graph:
    """g, or a copy in which each part of a fused dense map (split of a dense whose parameters
    are concatenations) whose only reader is a 2-D depthwise conv, directly or through
    per-element maps, is a dense map of its own; the remaining parts of that map stay one map
    (or become a plain one)."""
    conv_parts: dict[int, list[int]] = {}  # fused dense -> its split nodes read by a 2-D conv
    for nid, node, _ in g.items():
        part = conv_source(g, nid) if node.op == "dwconv2d" else None
        if part is None or g.node(part).op != "split" or len(g.users(part)) != 1:
            continue
        fused = g.inputs(part)[0]
        if g.node(fused).op == "dense" and all(e.fn == "concat"
                                               for _, e in g.node(fused).params):
            conv_parts.setdefault(fused, []).append(part)
    if not conv_parts:
        return g
    out = g.copy()
    for fused, parts in conv_parts.items():
        source = out.inputs(fused)
        rest = [s for s in _parts(out, fused) if s not in parts]
        for s in parts:  # the conv's part: its own map
            out.replace_uses(s, out.add(_block(out, fused, [s]), source))
        if len(rest) == 1:
            out.replace_uses(rest[0], out.add(_block(out, fused, rest), source))
        elif rest:  # one wide map of the rest, split again
            wide = out.add(_block(out, fused, rest), source)
            for i, s in enumerate(rest):
                split = out.node(s)
                out.replace_uses(s, out.add(Node("split", freeze({"parts": len(rest),
                                                                  "index": i}),
                                                 split.width, (), split.label), (wide,)))
    out.prune()
    return out


def _parts(g: Graph, fused: int) -> list[int]:
    """The split nodes of a fused map, in channel order."""
    return sorted(g.users(fused), key=lambda s: g.node(s).a["index"])


def _block(g: Graph, fused: int, members: list[int]) -> Node:
    """The dense map of the parts `members` (split nodes) of the fused map `fused`: its
    parameters the members' blocks of the concatenations; labelled as its one member, or as
    the fused map."""
    node, splits = g.node(fused), _parts(g, fused)
    index = [splits.index(m) for m in members]
    params = tuple((role, e.args[index[0]] if len(index) == 1
                    else ParamExpr("concat", tuple(e.args[i] for i in index)))
                   for role, e in node.params)
    attrs = node.a
    if isinstance(attrs["out"], int):
        attrs["out"] = attrs["out"] // len(splits) * len(index)
    part = g.node(members[0]).width
    label = g.node(members[0]).label if len(index) == 1 else node.label
    return Node("dense", freeze(attrs), Width(part.coef * len(index), part.power), params, label)
