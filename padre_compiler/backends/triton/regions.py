"""Fused regions of an optimised graph that the Triton backend lowers to one kernel each.

A region is a depthwise convolution (dwconv1d / dwconv2d, with its bias), the Hadamard product
that is its only user (if any: the other factor is the gate), and the weighted accumulation of
the result into a `scaled_sum` (if the product, or the convolution, is one of its terms). The
terms of one scaled_sum that are region results computed after all its other terms are
accumulated by a chain of kernels: the first reads the other terms (pre-summed in torch when
there are several), each later one reads the running sum, so the sum costs no pass of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from padre_compiler.ir.graph import Graph

CONV_OPS = ("dwconv1d", "dwconv2d")


@dataclass(frozen=True)
class Region:
    conv: int  # the depthwise convolution
    end: int  # the node whose value the kernel produces: the Hadamard product, else the conv
    gate: int | None  # the other factor of the Hadamard product
    total: int | None = None  # the scaled_sum it accumulates into
    term: int | None = None  # which term (scale index) of that scaled_sum
    store_z: bool = True  # the region's own value is read by nodes other than the sum
    acc: tuple[int, ...] = ()  # terms of the sum read by this kernel (first of a chain)
    chain_first: bool = False
    chain_last: bool = False


def find_regions(g: Graph) -> dict[int, Region]:
    """Regions keyed by their end node, in a deterministic order."""
    pos = {nid: k for k, nid in enumerate(g.topo())}
    regions: dict[int, Region] = {}
    for nid, node, _ in g.items():
        if node.op not in CONV_OPS:
            continue
        end, gate = nid, None
        users = g.users(nid)
        if len(users) == 1 and g.node(users[0]).op == "hadamard":
            factors = g.inputs(users[0])
            if len(factors) == 2 and factors.count(nid) == 1:
                end, gate = users[0], factors[1 - factors.index(nid)]
        regions[end] = Region(nid, end, gate)
    for sid, node, terms in g.items():
        if node.op != "scaled_sum":
            continue
        fusable = [t for t in set(terms) if t in regions and terms.count(t) == 1
                   and regions[t].total is None]
        # the chain starts once every other term exists: regions before that are plain terms
        ready = max((pos[t] for t in terms if t not in fusable), default=-1)
        fused = sorted((t for t in fusable if pos[t] > ready), key=pos.__getitem__)
        rest = [k for k, t in enumerate(terms) if t not in fused]
        if not fused:
            continue
        for k, end in enumerate(fused):
            r = regions[end]
            regions[end] = Region(
                r.conv, r.end, r.gate, total=sid, term=terms.index(end),
                store_z=any(u != sid for u in g.users(end)),
                acc=tuple(rest) if k == 0 else (),
                chain_first=k == 0, chain_last=k == len(fused) - 1)
    return regions
