"""Triton backend: graph -> standalone module source with fused Triton kernels.

The fused regions (`regions.find_regions`: depthwise conv + bias + Hadamard gate + weighted
accumulation) become calls of one torch.library custom op, `dwconv_hadamard_fwd` (in a
namespace named by a digest of its source: `ops_namespace`),
backed by `dwconv_hadamard_fwd_kernel` (direct, CUDA cores) or, in a module with 2-D maps,
`dwconv_toeplitz_fwd_kernel` (banded Toeplitz products on tensor cores: `toeplitz.py`'s text,
which a module of 1-D convs leaves out), with a derived backward
(`dwconv_hadamard_bwd_kernel`, then the forward kernel with flipped taps for dx). A long
convolution with the products around it (`long_conv.find_long_conv_regions`) becomes
`long_conv_hadamard`: two kernels around torch's FFTs, forward and backward.
Linear attentions go to `linear_attention`'s kernels. Every other op
is lowered exactly as the PyTorch backend lowers it (dense maps go to cuBLAS through F.linear;
one feeding a 2-D conv stores channel-major and, where the conv is its only reader, leaves its
bias to the conv kernel: conv(y + b) = conv(y) + b * conv(1); a 2-D conv's part of a fused dense map
is a map of its own again, `layout.unfuse_conv_inputs`) and is marked `(torch)` in the
generated source. The kernel text lives in `kernels.py` and `toeplitz.py`; the
generated file imports only torch and triton and runs its naive PyTorch twins where Triton
cannot run.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import textwrap
from types import ModuleType

from padre_compiler.backends.pytorch import (
    helper_sources,
    lower_node,
    module_source,
    param_codes,
    return_statement,
    split_targets,
    statement,
    var_names,
)
from padre_compiler.backends.triton import kernels, linear_attention, long_conv, toeplitz
from padre_compiler.backends.triton.layout import conv_source, unfuse_conv_inputs
from padre_compiler.backends.triton.long_conv import LongConvRegion, find_long_conv_regions
from padre_compiler.backends.triton.regions import Region, find_regions
from padre_compiler.ir.graph import Graph
from padre_compiler.ir.ops import kernel2d
from padre_compiler.ir.params import ParamDecl

__all__ = ["emit_module", "find_regions"]


def _geometry(g: Graph, conv_attrs: dict) -> tuple[str, str, int, int]:
    """(height, width, pad_h, pad_w) source for the conv: 1-D maps run on a 1 x N grid."""
    if "causal" in conv_attrs:  # dwconv1d
        k = conv_attrs["kernel"]
        return "1", "N", 0, (k - 1 if conv_attrs["causal"] else k // 2)
    kh, kw = kernel2d(conv_attrs)
    return "H", "W", kh // 2, kw // 2


def _kernel_size(conv_attrs: dict) -> tuple[int, int]:
    """(kh, kw) of the conv: 1-D maps run on a 1 x N grid, with one row tap."""
    return (1, conv_attrs["kernel"]) if "causal" in conv_attrs else kernel2d(conv_attrs)


def source_lines(text: str, width: int, **indents: str) -> list[str]:
    """text wrapped at spaces only: an identifier or a hyphenated word is never cut (a name
    longer than the line gets a line of its own)."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False, **indents)


def _region_call(g: Graph, r: Region, names: dict[int, str], params: dict[str, str],
                 scales: dict[str, str], body: list[str], in_bias: str | None) -> str:
    """Source of one kernel call (a comment states what it computes); in_bias: the local
    holding the bias its input's dense map left to it, if any."""
    conv = g.node(r.conv)
    x = names[g.inputs(r.conv)[0]]
    weight = params["weight"] if conv.op == "dwconv2d" else f"{params['weight']}.unsqueeze(1)"
    bias = params.get("bias", "None")
    gate = "None" if r.gate is None else names[r.gate]
    acc = acc_scale = scale = "None"
    core = (f"conv({x})" if in_bias is None else f"conv({x} + {in_bias})") + (
        "" if r.gate is None else f" * {gate}")
    desc = f"{names[r.end]} = {core}"
    if r.total is not None:
        total = names[r.total]
        scale = scales[f"scale{r.term}"]
        if r.chain_first and len(r.acc) == 1:
            terms = g.inputs(r.total)
            acc, acc_scale = names[terms[r.acc[0]]], scales[f"scale{r.acc[0]}"]
        elif r.chain_first and r.acc:  # several other terms: one torch pass sums them first
            terms = g.inputs(r.total)
            code = f"{names[terms[r.acc[0]]]} * {scales[f'scale{r.acc[0]}']}"
            for k in r.acc[1:]:
                code = f"torch.addcmul({code}, {names[terms[k]]}, {scales[f'scale{k}']})"
            body.append(f"{total} = {code}  # [B, N, {g.node(r.total).width}] (torch)")
            acc = total
        elif not r.chain_first:
            acc = total
        lead = "" if acc == "None" else acc + ("" if acc_scale == "None" else f" * {acc_scale}")
        term = f"{scale} * " + (names[r.end] if r.store_z else f"({core})")
        desc = (f"{desc}; " if r.store_z else "") + f"{total} = " + (
            f"{lead} + {term}" if lead else term)
    h, w, ph, pw = _geometry(g, conv.a)
    if r.total is None:
        lhs, pick = names[r.end], "[0]"
    elif r.store_z:
        lhs, pick = f"{names[r.end]}, {names[r.total]}", ""
    else:
        lhs, pick = names[r.total], "[1]"
    body.append(f"# fused (triton): {desc}")
    return "\n".join([
        f"{lhs} = dwconv_hadamard(  # [B, N, {g.node(r.end).width}]",
        f"    {x}, {weight}, bias={bias}, gate={gate},",
        f"    acc={acc}, acc_scale={acc_scale}, scale={scale},",
        f"    height={h}, width={w}, pad_h={ph}, pad_w={pw},",
        f"    store_z={r.store_z}, store_o={r.total is not None},",
        *([] if in_bias is None else [f"    in_bias={in_bias},"]),
        f"){pick}",
    ])


def _long_conv_call(g: Graph, r: LongConvRegion, names: dict[int, str], body: list[str]) -> None:
    """Appends the source of one long_conv_hadamard call (a comment states what it computes):
    with the operands as the parts of one split, the whole tensor and their indexes."""
    params = param_codes(g.node(r.conv).params, names[r.conv], body)
    x = names[r.a] if r.b is None else f"{names[r.a]} * {names[r.b]}"
    skip = "" if "skip" not in params else f" + {params['skip']} * ({x})"
    core = f"long_conv({x}){skip}"
    comment = f"# fused (triton): {names[r.end]} = " + (
        core if r.gate is None else f"({core}) * {names[r.gate]}")
    operands = [n for n in (r.a, r.b, r.gate) if n is not None]
    if r.whole is not None:
        parts = sorted(operands, key=lambda n: g.node(n).a["index"])
        comment += f"; {', '.join(names[n] for n in parts)} the parts of {names[r.whole]}"
    body += source_lines(comment, 88, subsequent_indent="#   ")
    if r.whole is None:
        args = [names[r.a], "None" if r.b is None else names[r.b], params["filter"],
                params.get("skip", "None"), "None" if r.gate is None else names[r.gate]]
    else:
        args = [names[r.whole], "None", params["filter"], params.get("skip", "None"), "None",
                f"parts={list(r.parts)}"]
    body.append("\n".join([
        f"{names[r.end]} = long_conv_hadamard(  # [B, N, {g.node(r.end).width}]",
        *source_lines(", ".join(args) + ",", 88, initial_indent="    ",
                      subsequent_indent="    "),
        ")[0]"]))


def _attention_call(g: Graph, nid: int, names: dict[int, str], folded: dict[int, str],
                    fold: linear_attention.OutputFold | None, body: list[str]) -> None:
    """Appends the source of one linear_attention call (a comment states what it folds):
    its folded q / k normalisations, and its output epilogue where `fold` is given."""
    node, inputs = g.node(nid), g.inputs(nid)
    args = [names[g.inputs(i)[0] if i in folded else i] for i in inputs]
    args.append(str(node.a["heads"]))
    if node.a["weighted"]:
        args.append(param_codes(node.params, names[nid], body)["state"])
    normalised = [i for i in inputs if i in folded]
    args += [f"{folded[i]}={g.node(i).a['eps']!r}" for i in normalised]
    notes = [linear_attention.fold_note([folded[i] for i in normalised])]
    target = nid
    if fold is not None:
        args.append(f"res={names[fold.res]}")
        term = names[fold.res]  # the sum's other term, for the comment
        if fold.scaled is not None:
            scale = param_codes(g.node(fold.scaled).params, names[fold.scaled], body)["scale"]
            args.append(f"res_scale={scale}")
            term = f"{term} * {scale}"
        args.append(f"out_l2={g.node(fold.norm).a['eps']!r}")
        post = ""
        if fold.post is not None:
            args.append(f"post={names[fold.post]}")
            post = f" + {names[fold.post]}"
        notes.append(f"output l2rows(q S + {term}){post} in head_apply's epilogue, l2rows "
                     "per row and head")
        target = fold.end
    note = "; ".join(n for n in notes if n)
    comment = "triton: head_state, head_apply" + (f" ({note})" if note else "")
    body += source_lines(comment, 88, initial_indent="# ", subsequent_indent="#   ")
    call = f"{names[target]} = linear_attention({', '.join(args)})"
    shape = f"  # [B, N, {g.node(target).width}]"
    if len(call + shape) > 100:  # one argument line, wrapped, as the kernel calls have them
        call = "\n".join([f"{names[target]} = linear_attention({shape}",
                          *source_lines(", ".join(args) + ",", 92, initial_indent="    ",
                                        subsequent_indent="    "), ")"])
        shape = ""
    body.append(call + shape)


def family_texts(family: ModuleType, tensor_cores: bool) -> tuple[str, str]:
    """(kernels, runtime): the text a generated module pastes for a kernel family. The
    depthwise conv's (kernels) carries its tensor-core form (toeplitz) only with tensor_cores
    (a module with 2-D maps), else kernels.DIRECT_ONLY in its place."""
    if family is not kernels:
        return family.KERNEL, family.RUNTIME
    if tensor_cores:
        return kernels.KERNEL + toeplitz.KERNEL, kernels.RUNTIME + toeplitz.RUNTIME
    return kernels.KERNEL, kernels.RUNTIME + kernels.DIRECT_ONLY


def ops_namespace(family: ModuleType, pasted: str) -> str:
    """The torch.ops namespace of a kernel family's custom ops: a digest of the text that
    defines and runs them (the shared helpers, and `pasted`: the family's kernels and
    launchers, family_texts). Modules generated from the same text share the ops; from
    different texts (other revisions, other families, the conv with and without its
    tensor-core form), never."""
    text = kernels.SHARED + pasted
    tag = family.OPS_NAME.removesuffix("_OPS").lower()
    return f"padre_{tag}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@functools.cache
def _module_names() -> frozenset[str]:
    """Every name the pasted kernel and runtime texts bind at module level (parsed once)."""
    def bound(stmts: list[ast.stmt]) -> set[str]:
        names: set[str] = set()
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.ClassDef)):
                names.add(st.name)
            elif isinstance(st, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in st.names}
            elif isinstance(st, (ast.Assign, ast.AnnAssign)):
                targets = st.targets if isinstance(st, ast.Assign) else [st.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(st, (ast.If, ast.Try)):
                handlers = [h.body for h in getattr(st, "handlers", [])]
                for body in (st.body, st.orelse, *handlers):
                    names |= bound(body)
        return names

    texts = (kernels.STDLIB_IMPORTS, kernels.TORCH_IMPORTS, kernels.SHARED, kernels.KERNEL,
             kernels.RUNTIME, kernels.DIRECT_ONLY, toeplitz.KERNEL, toeplitz.RUNTIME,
             linear_attention.KERNEL, linear_attention.RUNTIME, long_conv.KERNEL,
             long_conv.RUNTIME)
    constants = {family.OPS_NAME for family in (kernels, linear_attention, long_conv)}
    return frozenset(constants | {name for text in texts for name in bound(ast.parse(text).body)})


def emit_module(g: Graph, decls: dict[str, ParamDecl], *, name: str, header: str,
                fixed_dim: int | None = None) -> str:
    """Python source of an nn.Module named after the spec, fused regions on Triton kernels."""
    g = unfuse_conv_inputs(g)
    names = var_names(g, _module_names())
    regions = find_regions(g)
    inner = {r.conv for r in regions.values() if r.conv != r.end}
    long_regions = find_long_conv_regions(g, inner | set(regions))
    inner |= {n for r in long_regions.values() for n in (r.conv, r.product)
              if n is not None and n != r.end}
    inner |= {n for r in long_regions.values() if r.whole is not None  # read whole by the op
              for n in (r.a, r.b, r.gate) if n is not None}
    # the tensor-core form (toeplitz.py) takes 2-D maps of 8 rows or more: a module carries it
    # where a region's conv is 2-D
    tensor_cores = any(g.node(r.conv).op == "dwconv2d" for r in regions.values())
    # the node each 2-D conv's input takes its layout from (dense_for_conv's where a dense map)
    conv_input = ({conv_source(g, r.conv): r.conv for r in regions.values()} if tensor_cores
                  else {})
    taken = set(names.values())
    # dense maps whose only reader is a conv leave their bias to it (dense_for_conv's fold)
    left_bias = {}
    for nid, conv in conv_input.items():
        node = g.node(nid)
        if (node.op == "dense" and any(role == "bias" for role, _ in node.params)
                and g.users(nid) == [conv]):
            left = f"{names[nid]}_left_bias"
            while left in taken:
                left += "_"
            left_bias[nid] = left
            taken.add(left)
    fused_sums = {r.total for r in regions.values() if r.total is not None}
    folded = linear_attention.folded_normalizers(g)
    outputs = linear_attention.folded_outputs(g)  # attentions with an output epilogue
    epilogue_at = {fold.end: nid for nid, fold in outputs.items()}
    absorbed = {n for fold in outputs.values() for n in fold.absorbed}
    body: list[str] = []
    used_helpers: list[str] = []
    fallback: list[str] = []
    splits = split_targets(g, names)
    for nid, node, inputs in g.items():
        if nid in inner or nid in fused_sums or nid in folded or nid in absorbed:
            continue  # computed by the kernel of the region that ends later, or by the
            # linear attention that reads it (a normalisation folded into its state), or by
            # the linear attention call at the end of its output epilogue
        if splits.get(nid) == "":
            continue  # bound with its first sibling
        region = regions.get(nid)
        if region is not None:
            params = param_codes(g.node(region.conv).params, names[region.conv], body)
            scales = ({} if region.total is None else
                      param_codes(g.node(region.total).params, names[region.total], body))
            source = g.inputs(region.conv)[0]
            body.append(_region_call(g, region, names, params, scales, body,
                                     left_bias.get(source)))
            continue
        if nid in long_regions:
            _long_conv_call(g, long_regions[nid], names, body)
            continue
        if node.op == "linear_attention" or nid in epilogue_at:
            attention = epilogue_at.get(nid, nid)
            _attention_call(g, attention, names, folded, outputs.get(attention), body)
            continue
        target = splits.get(nid) or names[nid]
        if node.op == "dense" and nid in conv_input:  # channel-major where the conv is Toeplitz
            conv = g.node(conv_input[nid]).a
            dense = param_codes(node.params, names[nid], body)
            code = (f"dense_for_conv({names[inputs[0]]}, {dense['weight']}, "
                    f"{dense.get('bias', 'None')}, {_geometry(g, conv)[0]}, "
                    f"{', '.join(map(str, _kernel_size(conv)))}")
            if nid in left_bias:
                code, target = f"{code}, fold_bias=True)", f"{target}, {left_bias[nid]}"
            else:
                code += ")[0]"
        else:
            code = lower_node(nid, node, inputs, names, body, used_helpers)
        if node.op == "output":
            body.append(return_statement(g, nid, code))
        elif node.op != "input":
            if node.op not in fallback and node.op not in ("split", "identity"):
                fallback.append(node.op)
            body.append(statement(target, code, node.width,
                                  " each" if node.op == "split" else " (torch)"))
    fused_ops = sorted({g.node(r.conv).op for r in regions.values()}
                       | ({"hadamard"} if any(r.gate is not None for r in regions.values())
                          else set())
                       | ({"scaled_sum"} if fused_sums else set()))
    attention = g.find("linear_attention")
    kernel_notes = []
    if regions:
        kernel_notes.append(f"{len(regions)} region(s) of {', '.join(fused_ops)} "
                            "(dwconv_hadamard_fwd_kernel; " + (
                                "dwconv_toeplitz_fwd_kernel on tensor cores)" if tensor_cores
                                else "on CUDA cores, as every 1-D map: the tensor-core form, "
                                "for 2-D maps, is not carried)"))
    if long_regions:
        products = sum((r.product is not None) + (r.gate is not None)
                       for r in long_regions.values())
        kernel_notes.append(f"{len(long_regions)} long convolution(s) with {products} Hadamard "
                            "product(s) (long_conv_in_kernel, long_conv_out_kernel around "
                            "torch.fft's FFTs of size 2N)")
    if attention:
        notes = [linear_attention.fold_note(sorted(folded.values()))]
        if outputs:
            notes.append("the output's l2 row normalisation and the terms around it in "
                         "head_apply_kernel's epilogue")
        glue = ["summed over its chunks"]
        l1 = [role for role in ("k", "q") if f"{role}_l1" in folded.values()]
        if l1:
            glue.append(f"its rows divided by {' and '.join(l1)}'s l1 norms over tokens"
                        + (" (q's a torch reduction over q)" if "q" in l1 else ""))
        if any(g.node(a).a["weighted"] for a in attention):
            glue.append("weighted slot-wise")
        notes.append(f"between them, in torch, the [B, h, e, e] state {', '.join(glue)}")
        folds = "; ".join(n for n in notes if n)
        kernel_notes.append(f"{len(attention)} linear attention(s) (head_state_kernel, "
                            "head_apply_kernel" + (f"; {folds}" if folds else "") + ")")
    note = [
        "Fused Triton kernels: " + ("; ".join(kernel_notes) if kernel_notes else
                                    "none (no convolution region or attention)") + ".",
        "Torch fallback (marked `(torch)` below): "
        + (", ".join(fallback) if fallback else "none")
        + ("; dense maps run on cuBLAS through F.linear" if "dense" in fallback else "")
        + ("; those feeding a conv through dense_for_conv (stored channel-major where the conv "
           "runs on tensor cores, the bias of a map only the conv reads then added by the conv "
           "kernel)" if any("dense_for_conv(" in line for line in body) else "") + ".",
        "Backward: derived (custom-op autograd): dwconv_hadamard_bwd_kernel gives du, the gate "
        "and accumulator gradients and the db, scale reductions (and dw in the direct form, "
        "or torch's conv2d_weight under deterministic algorithms; u, where a gate or a scaled "
        "output reads it, recomputed); "
        + ("in the Toeplitz form u comes from the forward kernel and dw from "
           "dwconv_toeplitz_wgrad_kernel on tensor cores; " if tensor_cores else "")
        + "dx is the forward kernel with flipped taps. Torch ops differentiate through torch "
        "autograd." if regions else "Backward: torch autograd for the torch ops.",
        "Where the kernels cannot run (no Triton, a CPU tensor without TRITON_INTERPRET=1, "
        "float64, bf16 under the interpreter), each fused call runs its naive PyTorch twin, "
        "defined beside its kernels." if regions or attention or long_regions else "",
        "Long convolution backward: derived (custom-op autograd): long_conv_in_kernel and "
        "long_conv_out_kernel again around FFTs (the adjoint of the causal convolution is the "
        "anti-causal correlation; the filter's gradient a correlation summed over the batch in "
        "frequency space, by spectral_correlation_kernel)." if long_regions else "",
        "Linear attention backward: head_state and head_apply again (each is linear in each "
        "argument)." if attention else "",
    ]
    note = [line for text in note for line in textwrap.wrap(text, 96, break_on_hyphens=False)]
    families = [f for f, used in ((kernels, regions), (linear_attention, attention),
                                  (long_conv, long_regions)) if used]
    preamble = [kernels.TORCH_IMPORTS.strip("\n"), ""]
    if families:  # the launchers' imports and helpers (a file without kernels has none)
        preamble = [kernels.STDLIB_IMPORTS.strip("\n"), "", *preamble,
                    kernels.SHARED.strip("\n"), ""]
    for family in families:
        kernel_text, runtime_text = family_texts(family, tensor_cores)
        preamble += ["", "# torch.ops namespace of the custom ops below, a digest of the "
                     "source they were", "# generated from: modules from another source never "
                     "share them (an edited copy of", "# this file must change it, or it runs "
                     "the first loaded file's ops)",
                     f"{family.OPS_NAME} = "
                     f"{ops_namespace(family, kernel_text + runtime_text)!r}",
                     "", kernel_text.strip("\n"), "", "", runtime_text.strip("\n"), ""]
    if families:
        tiles = {k: v for family in families for k, v in family.DOT_TILES.items()}
        if tensor_cores:
            tiles |= toeplitz.DOT_TILES
        preamble += ["", "# tl.dot tiles per kernel, (batch, M, N, K): backends/triton/legality.py",
                     "DOT_TILES = {", *(f"    {k!r}: {v!r}," for k, v in tiles.items()), "}", ""]
    preamble += helper_sources(used_helpers)
    docstring = f"{header}\n" + "".join(f"{line}\n" for line in note)
    return module_source(g, decls, name=name, docstring=docstring, preamble=preamble, body=body,
                         fixed_dim=fixed_dim)
