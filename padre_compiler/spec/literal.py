"""A spec as a Python literal and back: its expression DAG as a list of nodes, each naming its
inputs by position (inputs first), with only numbers, strings, tuples, lists and dicts inside.

    from_literal(to_literal(spec)) builds the same graph (`Spec.graph()`, item for item)

A fuzz regression found on a spec built in Python embeds this literal, so it replays without
the code that built the spec (and a non-bundled TOML file's regression keeps the graph it was
found on, whatever later happens to the file).
"""

from __future__ import annotations

from typing import Any

from padre_compiler.errors import SpecError
from padre_compiler.spec.dsl import Expr
from padre_compiler.spec.model import Spec, _postorder

FORMAT = 1  # bump when the node fields below change


def to_literal(spec: Spec) -> dict[str, Any]:
    """The spec's name, layout, description, fixed width and nodes, in dependency order."""
    order = _postorder(spec.output)
    index = {id(expr): i for i, expr in enumerate(order)}
    nodes = []
    for expr in order:
        node: dict[str, Any] = {"op": expr.op, "inputs": [index[id(x)] for x in expr.inputs]}
        if expr.op == "input":
            node["layout"] = expr.layout
        node.update({key: value for key, value in (
            ("attrs", expr.attrs), ("name", expr.name), ("label", expr.label),
            ("init", expr.init)) if value})
        nodes.append(node)
    return {"format": FORMAT, "name": spec.name, "layout": spec.layout,
            "description": spec.description, "fixed_dim": spec.fixed_dim, "nodes": nodes}


def from_literal(data: dict[str, Any], source: str = "<literal>") -> Spec:
    """The spec `to_literal` wrote; every node is validated again as the DSL validates it."""
    if data.get("format") != FORMAT:
        raise SpecError("format", f"a spec literal of format {data.get('format')!r}, this "
                        f"version reads format {FORMAT}",
                        "regenerate it (rerun the fuzz run that wrote it)", source=source)
    built: list[Expr] = []
    for i, node in enumerate(data["nodes"]):
        inputs = tuple(built[j] for j in node["inputs"])
        expr = Expr(node["op"], inputs, dict(node.get("attrs", {})), name=node.get("name"),
                    label=node.get("label", ""), field=f"nodes[{i}]", init=node.get("init"))
        if node["op"] == "input":
            expr.layout = node["layout"]
        built.append(expr)
    return Spec.from_expr(data["name"], layout=data["layout"], output=built[-1],
                          description=data["description"], source=source,
                          fixed_dim=data["fixed_dim"])
