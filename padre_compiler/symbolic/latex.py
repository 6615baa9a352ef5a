"""LaTeX for a graph: one equation per named tensor (Y_i, Z_i, P, O), operators inline."""

from __future__ import annotations

import re

from padre_compiler.ir.graph import Graph, Node
from padre_compiler.ir.ops import kernel2d
from padre_compiler.ir.registry import RuleTable
from padre_compiler.spec.surrogates import FUNCTIONS

latex_rules = RuleTable("latex")


def _name(node: Node) -> str:
    """The operator's spec name (its parameters' prefix), escaped for LaTeX."""
    if node.params:
        role, expr = node.params[0]
        leaves = expr.leaves()
        name = leaves[0].removesuffix(f"_{role}") if len(leaves) == 1 else node.label
    else:
        name = node.label or node.op
    return _escaped(name)


def _escaped(text: str) -> str:
    return text.replace("_", r"\_")


def _top(text: str) -> set[str]:
    """The operators at `text`'s top level: "+", "odot" (⊙), "mul" (a matrix product or an
    operator applied on the left, written by juxtaposition or a thin space)."""
    flat, depth = [], 0
    for ch in text:
        depth -= ch in ")}"
        if depth == 0:
            flat.append(ch)
        depth += ch in "({"
    top = "".join(flat).replace(" + ", "+").replace(r" \odot ", r"\odot")
    return ({"+"} & set(top)) | ({"odot"} if r"\odot" in top else set()) \
        | ({"mul"} if " " in top or r"\," in top else set())


def _group(text: str, safe: frozenset[str] = frozenset({"mul"})) -> str:
    """`text` as an operand, bracketed where an operator at its top level would bind wrongly:
    (a + b) W and (a ⊙ b) W, not a + b W or a ⊙ b W. `safe`: the operators that may stay
    bare (a matrix product before another one is associative: X W E)."""
    return rf"\left({text}\right)" if _top(text) - safe else text


def _factor(text: str) -> str:
    """`text` as a factor of ⊙: bracketed around a sum or a matrix product (⊙ and the
    product have no agreed precedence), bare around a ⊙ (associative)."""
    return _group(text, frozenset({"odot"}))


def _sub(node: Node) -> str:
    return rf"_{{\mathrm{{{_name(node)}}}}}"


def _biased(node: Node, text: str) -> str:
    return text + (r" + b" if node.a.get("bias") else "")


latex_rules.register("input")(lambda node, args: "X")
latex_rules.register("output", "identity", "split")(lambda node, args: args[0])
latex_rules.register("dense")(
    lambda node, args: _biased(node, rf"{_group(args[0])}\,W{_sub(node)}"))
latex_rules.register("diagonal")(lambda node, args: rf"w{_sub(node)} \odot {_factor(args[0])}")
latex_rules.register("hadamard")(lambda node, args: rf"{_factor(args[0])} \odot "
                                 rf"{_factor(args[1])}")
latex_rules.register("add")(lambda node, args: " + ".join(args))
latex_rules.register("bias")(lambda node, args: rf"{args[0]} + L")
latex_rules.register("global_sum")(
    lambda node, args: rf"\mathbf{{1}}\mathbf{{1}}^\top {_group(args[0])}")
latex_rules.register("prefix_sum")(
    lambda node, args: rf"\mathrm{{tril}}(\mathbf{{1}}) {_group(args[0])}")
latex_rules.register("expand")(
    lambda node, args: rf"{_group(args[0])}\,{'E' if node.a['mode'] == 'replicate' else 'F'}"
    + ("" if node.a.get("times") is None else rf"_{{{node.a['times']}}}".replace("dim", "D")))
latex_rules.register("contract")(
    lambda node, args: rf"{_group(args[0])}\,{'F' if node.a['keep'] == 'tile' else 'E'}"
    + ("" if node.a.get("times") is None else rf"_{{{node.a['times']}}}") + r"^\top")
# T_h x, plus the skip term d ⊙ x
latex_rules.register("long_conv")(
    lambda node, args: rf"\mathcal{{T}}{_sub(node)}\left({args[0]}\right)"
    + (rf" + d{_sub(node)} \odot {_factor(args[0])}" if node.a.get("skip") else ""))
latex_rules.register("dwconv1d")(lambda node, args: _biased(
    node, rf"\mathrm{{DW}}^{{{node.a['kernel']}{',c' if node.a['causal'] else ''}}}"
    rf"{_sub(node)}\left({args[0]}\right)"))
latex_rules.register("dwconv2d")(lambda node, args: _biased(
    node, rf"\mathrm{{DW}}^{{{kernel2d(node.a)[0]}\times{kernel2d(node.a)[1]}}}{_sub(node)}"
    rf"\left({args[0]}\right)"))
latex_rules.register("normalize")(
    lambda node, args: rf"\mathcal{{N}}_{{\mathrm{{{_escaped(node.a['kind'])}}}}}"
                       rf"\left({args[0]}\right)")


@latex_rules.register("poly")
def _poly(node: Node, args: list[str]) -> str:
    """p^{f}_q(x), a degree-q polynomial named so that two of one degree print apart: f the
    function it approximates where its `surrogate` note starts with one ("exp (chebyshev,
    order 16)"), else its label (mamba's expansion terms), else none."""
    fn = node.a["surrogate"].split(" ", 1)[0]
    name = fn if fn in FUNCTIONS else node.label
    top = rf"^{{\mathrm{{{_escaped(name)}}}}}" if name else ""
    return rf"p{top}_{{{len(node.a['coeffs']) - 1}}}\left({args[0]}\right)"


latex_rules.register("scaled_sum")(
    lambda node, args: " + ".join(rf"s_{{{k}}} \odot {_factor(a)}" for k, a in enumerate(args)))
latex_rules.register("linear_attention")(
    lambda node, args: rf"{_group(args[0])}\left({_group(args[1])}^\top "
                       rf"{_group(args[2])}\right)")

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
