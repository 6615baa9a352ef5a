"""Human-readable summaries of a compile: degree, parameters, cost against attention."""

from __future__ import annotations

from dataclasses import dataclass

from padre_compiler.compiler import Compiled
from padre_compiler.ir.cost import graph_cost, node_cost
from padre_compiler.ir.graph import Graph
from padre_compiler.symbolic.degree import degrees, output_terms


def attention_flops_per_token(dim: int, tokens: int) -> int:
    """timm-style softmax attention: qkv (3 D^2) and proj (D^2) MACs, QK^T and AV (2 N D)."""
    return 2 * (4 * dim * dim + 2 * tokens * dim)


@dataclass(frozen=True)
class Summary:
    name: str
    degree: int
    terms: list[tuple[str, str, bool]]  # label, degrees, homogeneous
    params: int
    flops_per_token: float
    attention_flops_per_token: float
    bytes_per_token: float
    tokens: int
    dim: int

    def lines(self) -> list[str]:
        flops, attention = self.flops_per_token, self.attention_flops_per_token
        versus = ("no FLOPs" if flops == 0 else f"{attention / flops:.2f}x fewer"
                  if attention >= flops else f"{flops / attention:.2f}x more")
        out = [
            f"spec           {self.name}",
            f"degree         {self.degree}",
            "terms of P     " + "; ".join(
                f"{lab}: degrees {deg}{' (homogeneous)' if hom else ''}"
                for lab, deg, hom in self.terms),
            f"parameters     {self.params:,} at dim={self.dim}",
            f"FLOPs / token  {flops / 1e6:.3f} M  vs softmax attention "
            f"{attention / 1e6:.3f} M at N={self.tokens}  ({versus})",
            f"bytes / token  {self.bytes_per_token / 1e3:.1f} kB (fp32, each op on its own)",
        ]
        return out


def summarise(result: Compiled, dim: int, tokens: int) -> Summary:
    g = result.graph
    cost = graph_cost(g, dim, tokens)
    terms = [(label, str(d), d.homogeneous) for label, d in output_terms(
        result.spec.graph(), result.spec.projection_maps)]
    return Summary(result.spec.name, degrees(g)[g.output_id].top, terms, cost.params,
                   cost.flops / tokens, attention_flops_per_token(dim, tokens),
                   cost.bytes / tokens, tokens, dim)


def explain_graph(g: Graph, dim: int, tokens: int) -> list[str]:
    """One line per node: id, op, label, inputs, output width, FLOPs and bytes."""
    deg = degrees(g)
    lines = []
    for nid, node, inputs in g.items():
        c = node_cost(g, nid, dim, tokens)
        attrs = ", ".join(f"{k}={v}" for k, v in node.attrs if k != "coeffs")
        lines.append(
            f"  %{nid:<3} {node.op:<17} {node.label[:22]:<22} "
            f"({', '.join(f'%{i}' for i in inputs)}) -> [N, {node.width}] "
            f"deg {deg[nid]}  {c.flops / 1e6:8.2f} MFLOP {c.bytes / 1e6:8.2f} MB"
            + (f"  [{attrs}]" if attrs else ""))
    return lines
