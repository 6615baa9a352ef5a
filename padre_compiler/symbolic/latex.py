"""LaTeX for a graph: one equation per named tensor (Y_i, Z_i, P, O), operators inline."""

from __future__ import annotations

import re

from padre_compiler.ir.graph import Graph, Node
from padre_compiler.ir.ops import kernel2d
from padre_compiler.ir.registry import RuleTable

latex_rules = RuleTable("latex")


def _name(node: Node) -> str:
    """The operator's spec name (its parameters' prefix), escaped for LaTeX."""
    if node.params:
        role, expr = node.params[0]
        leaves = expr.leaves()
        name = leaves[0].removesuffix(f"_{role}") if len(leaves) == 1 else node.label
    else:
        name = node.label or node.op
    return name.replace("_", r"\_")


def _group(text: str) -> str:
    """Parenthesise a sum before a right-multiplication: (a + b) W, not a + b W."""
    depth = 0
    for ch in text:
        depth += ch in "({"
        depth -= ch in ")}"
        if ch == "+" and depth == 0:
            return rf"\left({text}\right)"
    return text


def _op(symbol: str) -> callable:
    return lambda node, args: rf"{symbol}_{{\mathrm{{{_name(node)}}}}}\left({args[0]}\right)"


latex_rules.register("input")(lambda node, args: "X")
latex_rules.register("output", "identity", "split")(lambda node, args: args[0])
latex_rules.register("dense")(lambda node, args: _group(args[0])
                              + rf"\,W_{{\mathrm{{{_name(node)}}}}}"
                              + (r" + b" if node.a.get("bias") else ""))
latex_rules.register("diagonal")(lambda node, args: rf"w_{{\mathrm{{{_name(node)}}}}} \odot "
                                 rf"{args[0]}")
latex_rules.register("hadamard")(lambda node, args: rf"\left({args[0]}\right) \odot "
                                 rf"\left({args[1]}\right)")
latex_rules.register("add")(lambda node, args: " + ".join(args))
latex_rules.register("bias")(lambda node, args: rf"{args[0]} + L")
latex_rules.register("global_sum")(lambda node, args: rf"\mathbf{{1}}\mathbf{{1}}^\top {args[0]}")
latex_rules.register("prefix_sum")(lambda node, args: rf"\mathrm{{tril}}(\mathbf{{1}}) {args[0]}")
latex_rules.register("expand")(
    lambda node, args: rf"{args[0]}\,{'E' if node.a['mode'] == 'replicate' else 'F'}"
    + ("" if node.a.get("times") is None else rf"_{{{node.a['times']}}}".replace("dim", "D")))
latex_rules.register("contract")(
    lambda node, args: rf"{args[0]}\,{'F' if node.a['keep'] == 'tile' else 'E'}"
    + ("" if node.a.get("times") is None else rf"_{{{node.a['times']}}}") + r"^\top")
latex_rules.register("long_conv")(_op(r"\mathcal{T}"))
latex_rules.register("dwconv1d")(lambda node, args: rf"\mathrm{{DW}}^{{{node.a['kernel']}"
                                 rf"{',c' if node.a['causal'] else ''}}}"
                                 rf"_{{\mathrm{{{_name(node)}}}}}\left({args[0]}\right)")
latex_rules.register("dwconv2d")(lambda node, args: rf"\mathrm{{DW}}^{{{kernel2d(node.a)[0]}"
                                 rf"\times{kernel2d(node.a)[1]}}}_{{\mathrm{{{_name(node)}}}}}"
                                 rf"\left({args[0]}\right)")
latex_rules.register("normalize")(lambda node, args: rf"\mathcal{{N}}_{{\mathrm{{{node.a['kind']}"
                                  rf"}}}}\left({args[0]}\right)".replace("_tokens", r"\_tokens")
                                  .replace("_rows", r"\_rows"))
latex_rules.register("poly")(lambda node, args: rf"p_{{{len(node.a['coeffs']) - 1}}}\left("
                             rf"{args[0]}\right)")
latex_rules.register("scaled_sum")(
    lambda node, args: " + ".join(rf"s_{{{k}}} \odot {a}" for k, a in enumerate(args)))
latex_rules.register("linear_attention")(lambda node, args: rf"{args[0]}\left({args[1]}^\top "
                                         rf"{args[2]}\right)")

_NAMED = re.compile(r"^(Y|Z)(\d+)$|^P$|^O$")


def graph_latex(g: Graph) -> list[str]:
    """Equations `Name = expression` for every node labelled Y_i, Z_i, P or O."""
    text: dict[int, str] = {}
    eqs: list[str] = []
    for nid, node, inputs in g.items():
        body = latex_rules[node.op](node, [text[i] for i in inputs])
        m = _NAMED.match(node.label)
        if m and node.op != "input":
            sym = f"{m.group(1)}_{{{m.group(2)}}}" if m.group(1) else node.label
            eqs.append(f"{sym} = {body}")
            text[nid] = sym
        else:
            text[nid] = body
    return eqs
