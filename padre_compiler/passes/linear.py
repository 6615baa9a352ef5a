"""Linear-map passes: merge adjacent channel maps, re-associate global token sums, and batch
sibling maps into one wider map.

merge_linear (each rule needs the inner map to have no other user, and applies where the
merged map costs fewer FLOPs at N tokens, its merged parameter's product counted once a call):
    diagonal_t(diagonal_s(x))    -> diagonal_{s*t}(x)
    dense_W(diagonal_s(x))       -> dense_{W diag(s)}(x)
    diagonal_s(dense_{W,b}(x))   -> dense_{diag(s) W, s*b}(x)
    dense_{W2,b2}(dense_{W1,b1}(x)) -> dense_{W2 W1, W2 b1 + b2}(x)

commute_column_normalizers (a per-column normaliser commutes with copying columns):
    normalize_{l1_tokens}(expand(x)) -> expand(normalize_{l1_tokens}(x))
so the hooks of SimA's Q and K stop hiding the expand that reassociate_global_sums needs.

distribute_contract (contract is linear; where a term's contract then reduces by one of the
next two rules):
    contract(add(t_1, ..., t_n)) -> add(contract(t_1), ..., contract(t_n))

reassociate_global_sums (per head g, e = head width, S = 1 1^T):
    contract_tile( S(expand_rep(k) ⊙ expand_tile(v)) ⊙ expand_rep(q) ) = q (k^T v)
    contract_tile( diag_W(S(expand_rep(k) ⊙ expand_tile(v)) ⊙ expand_rep(q)) ) = q (W ⊙ k^T v)
the N x e^2 outer products and their sum become a [e, e] state: (Q K^T) V -> Q (K^T V).

contract_expansions (token maps T = identity, 1 1^T or tril(1) commute with copying channels):
    contract_keep(diag_W(T(expand_keep(x)))) -> diag_{sum_copies(W)}(T(x))

fuse_scaled_sum: add(diagonal_s0(x0), ..., diagonal_sn(xn)) -> scaled_sum_{s}(x0, ..., xn)

fuse_siblings (channel concatenation commutes with per-channel maps):
    dense_{W1}(x), ..., dense_{Wk}(x)           -> split(dense_{[W1; ...; Wk]}(x))
    f_{p1}(split_1(y)), ..., f_{pk}(split_k(y))  -> split(f_{[p1; ...; pk]}(y))   f per-channel
"""

from __future__ import annotations

from padre_compiler.ir.cost import node_flops
from padre_compiler.ir.graph import Graph, Node, freeze
from padre_compiler.ir.params import ParamExpr
from padre_compiler.ir.width import Width
from padre_compiler.passes.base import PassContext, register_pass
from padre_compiler.passes.simplify import eliminate_identity


def _sole_user(g: Graph, nid: int) -> bool:
    return len(g.users(nid)) == 1


def _rewire(g: Graph, old: int, node: Node, inputs: tuple[int, ...]) -> int:
    """Replace node `old` by a new node computing the same tensor from `inputs`."""
    new = g.add(node, inputs)
    g.replace_uses(old, new)
    g.g.remove_node(old)
    return new


@register_pass("merge_linear", "fold diagonal scales into neighbouring maps and multiply "
                               "adjacent dense maps, where that costs fewer FLOPs")
def merge_linear(g: Graph, ctx: PassContext) -> int:
    for nid, outer, inputs in g.items():
        if outer.op not in ("dense", "diagonal") or not inputs:
            continue
        inner_id = inputs[0]
        inner = g.node(inner_id)
        if inner.op not in ("dense", "diagonal") or not _sole_user(g, inner_id):
            continue
        merged = _merge(outer, inner)
        source = g.inputs(inner_id)
        if node_flops(g, merged, source, ctx.dim, ctx.tokens) < \
                node_flops(g, inner, source, ctx.dim, ctx.tokens) + \
                node_flops(g, outer, inputs, ctx.dim, ctx.tokens):
            _rewire(g, nid, merged, source)
            g.g.remove_node(inner_id)
            return 1
    return 0


def _merge(outer: Node, inner: Node) -> Node:
    po, pi = outer.p, inner.p
    label = f"{inner.label}+{outer.label}"
    if outer.op == "diagonal" and inner.op == "diagonal":
        return Node("diagonal", (), outer.width,
                    (("scale", ParamExpr("mul", (pi["scale"], po["scale"]))),), label)
    if outer.op == "dense" and inner.op == "diagonal":
        params = {**po, "weight": ParamExpr("scale_cols", (po["weight"], pi["scale"]))}
        return Node("dense", outer.attrs, outer.width, tuple(params.items()), label)
    if outer.op == "diagonal" and inner.op == "dense":
        params = {"weight": ParamExpr("scale_rows", (pi["weight"], po["scale"]))}
        if "bias" in pi:
            params["bias"] = ParamExpr("mul", (pi["bias"], po["scale"]))
        return Node("dense", inner.attrs, outer.width, tuple(params.items()), label)
    params = {"weight": ParamExpr("matmul", (po["weight"], pi["weight"]))}
    bias = ParamExpr("matmul", (po["weight"], pi["bias"])) if "bias" in pi else None
    if bias is not None and "bias" in po:
        bias = ParamExpr("add", (bias, po["bias"]))
    elif bias is None and "bias" in po:
        bias = po["bias"]
    if bias is not None:
        params["bias"] = bias
    # out: the outer map's, or (None: as wide as its input) the inner one's
    out = outer.a["out"] if outer.a["out"] is not None else inner.a["out"]
    attrs = freeze({"out": out, "bias": bias is not None})
    return Node("dense", attrs, outer.width, tuple(params.items()), label)


@register_pass("fuse_scaled_sum", "add(diagonal_s0(x0), ..., diagonal_sn(xn)) -> "
                                  "scaled_sum(x0, ..., xn): one multiply-add pass per term")
def fuse_scaled_sum(g: Graph, ctx: PassContext) -> int:
    for nid, node, inputs in g.items():
        if node.op != "add" or len(inputs) < 2:
            continue
        terms = [g.node(i) for i in inputs]
        if any(t.op != "diagonal" or not _sole_user(g, i) for t, i in zip(terms, inputs,
                                                                           strict=True)):
            continue
        params = tuple((f"scale{k}", t.p["scale"]) for k, t in enumerate(terms))
        fused = Node("scaled_sum", (), node.width, params, node.label)
        _rewire(g, nid, fused, tuple(g.inputs(i)[0] for i in inputs))
        g.g.remove_nodes_from(inputs)
        return 1
    return 0


# normalisation hooks ------------------------------------------------------------------------
COLUMN_NORMALIZERS = ("l1_tokens",)  # each channel divided by a function of that channel alone


@register_pass("commute_column_normalizers", "normalize(expand(x)) -> expand(normalize(x)) "
                                             "for per-column normalisers (l1 over tokens)")
def commute_column_normalizers(g: Graph, ctx: PassContext) -> int:
    for nid, node, inputs in g.items():
        if node.op != "normalize" or node.a["kind"] not in COLUMN_NORMALIZERS:
            continue
        inner = g.node(inputs[0])
        if inner.op != "expand" or not _sole_user(g, inputs[0]):
            continue
        source = g.inputs(inputs[0])[0]
        width = g.node(source).width
        normed = g.add(Node("normalize", node.attrs, width, (), node.label), (source,))
        _rewire(g, nid, Node("expand", inner.attrs, node.width, (), inner.label), (normed,))
        g.g.remove_node(inputs[0])  # the old expand: its only user was the normaliser
        return 1
    return 0


# re-association of global token sums ----------------------------------------------------------
def _expanded(g: Graph, nid: int, mode: str, heads: int) -> int | None:
    node = g.node(nid)
    if node.op == "expand" and node.a["mode"] == mode and node.a["heads"] == heads \
            and node.a.get("times") is None:
        return g.inputs(nid)[0]
    return None


def _outer_pair(g: Graph, nid: int, rep: str, heads: int) -> tuple[int, int] | None:
    """nid = expand_rep(a) ⊙ expand_other(b) (either order) -> (a, b)."""
    node = g.node(nid)
    if node.op != "hadamard":
        return None
    other = "tile" if rep == "replicate" else "replicate"
    lhs, rhs = g.inputs(nid)
    for x, y in ((lhs, rhs), (rhs, lhs)):
        a, b = _expanded(g, x, rep, heads), _expanded(g, y, other, heads)
        if a is not None and b is not None:
            return a, b
    return None


@register_pass("distribute_contract", "contract(t_1 + ... + t_n) -> contract(t_1) + ... + "
                                      "contract(t_n), where a term's contract then reduces")
def distribute_contract(g: Graph, ctx: PassContext) -> int:
    for nid, node, inputs in g.items():
        total = inputs[0] if node.op == "contract" else None
        if total is None or g.node(total).op != "add" or not _sole_user(g, total):
            continue
        # only where a term's contract then reduces: n contracts at the wide width and n - 1
        # narrow adds cost more FLOPs than n - 1 wide adds and one contract
        trial = g.copy()
        if not any(_reassociation(trial, part) or _contracted_expansion(trial, part)
                   for part in _distribute(trial, nid, total)):
            continue
        _distribute(g, nid, total)
        return 1
    return 0


def _distribute(g: Graph, nid: int, total: int) -> tuple[int, ...]:
    """contract(add(t_1, ..., t_n)) at `nid` -> add(contract(t_1), ...); the new contracts."""
    node = g.node(nid)
    parts = tuple(g.add(Node("contract", node.attrs, node.width, (), ""), (t,))
                  for t in g.inputs(total))
    _rewire(g, nid, Node("add", (), node.width, (), node.label), parts)
    g.g.remove_node(total)
    return parts


def _state_weight(g: Graph, nid: int) -> tuple[int, ParamExpr | None]:
    """diag_W(y) -> (y, W); any other node -> (node, None)."""
    node = g.node(nid)
    if node.op == "diagonal" and _sole_user(g, nid):
        return g.inputs(nid)[0], node.p["scale"]
    return nid, None


def _reassociation(g: Graph, nid: int) -> tuple[Node, tuple[int, int, int]] | None:
    """The linear_attention node (and its inputs q, k, v) that node `nid` re-associates to:
    contract(S(E k ⊙ F v) ⊙ E q), optionally weighted; None where it does not match."""
    node = g.node(nid)
    if node.op != "contract" or node.a.get("times") is not None:
        return None
    heads = node.a["heads"]
    # keep = tile sums over the replicated index c, so q and k carry c and v carries m
    rep = "replicate" if node.a["keep"] == "tile" else "tile"
    prod_id, weight = _state_weight(g, g.inputs(nid)[0])
    if g.node(prod_id).op != "hadamard" or (weight is not None and rep != "replicate"):
        return None  # a weight's slots (g, c, m) read as the state's [c, m] for keep = tile
    for s_id, q_id in (g.inputs(prod_id), reversed(g.inputs(prod_id))):
        q = _expanded(g, q_id, rep, heads)
        if q is None or g.node(s_id).op != "global_sum":
            continue
        kv = _outer_pair(g, g.inputs(s_id)[0], rep, heads)
        if kv is None:
            continue
        params = () if weight is None else (("state", weight),)
        fused = Node("linear_attention",
                     freeze({"heads": heads, "weighted": weight is not None}), node.width,
                     params, node.label or "linear_attention")
        return fused, (q, kv[0], kv[1])
    return None


@register_pass("reassociate_global_sums", "contract(S(E k ⊙ F v) ⊙ E q) -> q (k^T v) per head: "
                                          "never materialise the N x D^2 outer products")
def reassociate_global_sums(g: Graph, ctx: PassContext) -> int:
    for nid, _, _ in g.items():
        found = _reassociation(g, nid)
        if found is not None:
            _rewire(g, nid, *found)
            return 1
    return 0


COPY_COMMUTING = ("identity", "global_sum", "prefix_sum")  # the same map on every channel


def _contracted_expansion(g: Graph, nid: int) -> tuple[int, int | None, ParamExpr] | None:
    """(x, the token map T or None, W) where node `nid` is contract(diag_W(T(expand(x))))
    with the expand's layout; None where it does not match."""
    node = g.node(nid)
    if node.op != "contract":
        return None
    inner, weight = _state_weight(g, g.inputs(nid)[0])
    token = inner if g.node(inner).op in COPY_COMMUTING and _sole_user(g, inner) else None
    exp_id = g.inputs(token)[0] if token is not None else inner
    exp = g.node(exp_id)
    if weight is None or exp.op != "expand" or exp.a["mode"] != node.a["keep"] \
            or exp.a["heads"] != node.a["heads"] or exp.a.get("times") != node.a["times"]:
        return None
    return g.inputs(exp_id)[0], token, weight


def summed_copies(g: Graph) -> dict[str, Width]:
    """The diagonal scales whose copies a contract sums (contract_expansions' W, a contract's
    input or a term of its sum): name -> the copies each output channel sums (the expand's
    times, or its head width e). An all-ones W makes that chain `copies` times x. Identities
    are dropped first, as the pipeline does (a branch's token identity may feed two terms)."""
    g = g.copy()
    eliminate_identity.run(g, PassContext(dim=1, tokens=1))  # reads no context
    out: dict[str, Width] = {}
    contracts = g.find("contract")
    while contracts:  # a sum of sums (a + b + c is add(add(a, b), c)) distributes again
        nid = contracts.pop()
        total = g.inputs(nid)[0]
        if g.node(total).op == "add" and _sole_user(g, total):
            contracts += _distribute(g, nid, total)
            continue
        found = _contracted_expansion(g, nid)
        if found is None or found[2].fn != "leaf":
            continue
        times, width = g.node(nid).a["times"], g.node(found[0]).width
        heads = g.node(nid).a["heads"]
        out[found[2].args[0]] = (Width.const(times) if times is not None else
                                 Width(width.coef / heads, width.power))
    return out


@register_pass("contract_expansions", "contract(diag_W(T(expand(x)))) -> "
                                      "diag_{sum of W over the copies}(T(x))")
def contract_expansions(g: Graph, ctx: PassContext) -> int:
    for nid, node, _ in g.items():
        found = _contracted_expansion(g, nid)
        if found is None:
            continue
        x, token, weight = found
        width = g.node(x).width
        if token is not None:
            x = g.add(Node(g.node(token).op, g.node(token).attrs, width, (),
                           g.node(token).label), (x,))
        summed = ParamExpr("sum_copies", (weight, node.a["heads"], node.a["times"],
                                          node.a["keep"], width))
        _rewire(g, nid, Node("diagonal", (), node.width, (("scale", summed),), node.label),
                (x,))
        return 1
    return 0


# horizontal fusion ------------------------------------------------------------------------------
PER_CHANNEL = ("dwconv1d", "dwconv2d", "diagonal", "bias", "long_conv")


def _concat_params(nodes: list[Node]) -> tuple[tuple[str, ParamExpr], ...]:
    roles = [r for r, _ in nodes[0].params]
    return tuple((r, ParamExpr("concat", tuple(n.p[r] for n in nodes))) for r in roles)


def _fuse(g: Graph, members: list[int], source: int) -> None:
    """Replace `members` (same op and attrs, each reading its own block of channels, or all
    reading `source`) by one op on `source` with concatenated parameters, then splits."""
    nodes = [g.node(m) for m in members]
    k = len(nodes)
    first = nodes[0]
    width = Width(first.width.coef * k, first.width.power)
    attrs = dict(first.attrs)
    if first.op == "dense" and isinstance(attrs["out"], int):
        attrs["out"] = attrs["out"] * k
    elif first.op == "dense" and attrs["out"] == "dim":
        attrs["out"] = None  # the fused map's width is k * D, carried by the node
    label = _joint_label([n.label for n in nodes]) or first.op
    fused = g.add(Node(first.op, freeze(attrs), width, _concat_params(nodes), label), (source,))
    for i, m in enumerate(members):
        part = Node("split", freeze({"parts": k, "index": i}), first.width, (), nodes[i].label)
        _rewire(g, m, part, (fused,))


def _joint_label(labels: list[str]) -> str:
    """branch1_channel, branch2_channel -> branch12_channel; Y1, Y2, Y3 -> y123."""
    if not all(labels):
        return ""
    first = labels[0]
    i = next((i for i, ch in enumerate(first) if any(lb[i:i + 1] != ch for lb in labels)), 0)
    if all(len(lb) == len(first) and lb[:i] == first[:i] and lb[i + 1:] == first[i + 1:]
           for lb in labels):
        return first[:i] + "".join(lb[i] for lb in labels) + first[i + 1:]
    return "_".join(labels)


def _same_kind(nodes: list[Node]) -> bool:
    roles = [tuple(r for r, _ in n.params) for n in nodes]
    return (len({(n.op, n.attrs, n.width) for n in nodes}) == 1 and len(set(roles)) == 1
            and all(e.fn == "leaf" for n in nodes for _, e in n.params))


@register_pass("fuse_siblings", "one wide dense map for dense maps of one input; one wide "
                                "per-channel map for per-channel maps of all blocks of a split")
def fuse_siblings(g: Graph, ctx: PassContext) -> int:
    for nid in g.topo():
        users = g.users(nid)
        dense = [u for u in users if g.node(u).op == "dense" and g.inputs(u) == (nid,)]
        if len(dense) > 1 and _same_kind([g.node(u) for u in dense]):
            _fuse(g, dense, nid)
            return 1
        splits = [u for u in users if g.node(u).op == "split"]
        if not splits or len(splits) != g.node(splits[0]).a["parts"] or len(users) != len(splits):
            continue
        splits.sort(key=lambda u: g.node(u).a["index"])
        maps = [g.users(s)[0] if len(g.users(s)) == 1 else None for s in splits]
        if None in maps or len(set(maps)) != len(maps):
            continue
        nodes = [g.node(m) for m in maps]
        if nodes[0].op in PER_CHANNEL and _same_kind(nodes):
            for s in splits:
                g.g.remove_edge(s, maps[splits.index(s)])
            for m in maps:
                g.g.add_edge(nid, m, port=0)
            _fuse(g, maps, nid)
            g.g.remove_nodes_from(splits)
            return 1
    return 0
