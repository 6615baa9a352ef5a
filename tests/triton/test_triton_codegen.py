"""Generated Triton-backend code: committed, current, deterministic, standalone, readable."""

from __future__ import annotations

import ast
import dataclasses

import pytest

from padre_compiler.cli import codegen_path
from padre_compiler.compiler import generate
from padre_compiler.spec.loader import bundled_specs, load_spec

SPECS = [p.stem for p in bundled_specs()]


@pytest.mark.parametrize("name", SPECS)
def test_committed_triton_codegen_is_current(name: str) -> None:
    path = codegen_path(name, "triton")
    assert path.exists(), f"{path} missing: run `padre compile --all`"
    assert path.read_text() == generate(load_spec(name), backend="triton").source, (
        f"{path} is stale: run `padre compile --all` and commit the result")


@pytest.mark.parametrize("name", SPECS)
def test_triton_generation_is_deterministic(name: str) -> None:
    spec = load_spec(name)
    assert generate(spec, backend="triton").source == generate(spec, backend="triton").source


@pytest.mark.parametrize("name", SPECS)
def test_triton_source_imports_only_torch_and_triton(name: str) -> None:
    tree = ast.parse(codegen_path(name, "triton").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"collections.abc", "contextlib", "contextvars", "concurrent.futures", "functools",
               "inspect", "os", "types", "warnings", "torch", "torch.nn.functional", "triton",
               "triton.language", "triton.runtime._async_compile"}
    assert modules <= allowed, modules


@pytest.mark.parametrize(("name", "carried"), [("padre3", True), ("conv2former", True),
                                               ("hyena", False), ("castling_vit", False)])
def test_only_a_module_with_2d_maps_carries_the_tensor_core_form(name: str, carried: bool
                                                                 ) -> None:
    """A 1-D map always runs in the direct form, so a module of 1-D convs leaves out the
    tensor-core form's kernels, launchers and tiles (toeplitz.py's text), and the dense maps
    feeding its convs are plain F.linear calls (no channel-major layout to choose)."""
    source = codegen_path(name, "triton").read_text()
    tree = ast.parse(source)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    toeplitz = {"dwconv_toeplitz_fwd_kernel", "dwconv_toeplitz_wgrad_kernel",
                "dwconv_toeplitz_launch", "dense_for_conv", "fastest"}
    assert (toeplitz <= defined) if carried else not (toeplitz & defined), toeplitz & defined
    assert ("\nTENSOR_CORES = None\n" in source) != carried
    assert ("dwconv_toeplitz_fwd_kernel" in source) == carried
    body = source[source.index("def forward(self"):]
    assert ("dense_for_conv(" in body) == carried


def test_forcing_the_tensor_core_form_runs_1d_convs_in_the_direct_form(monkeypatch) -> None:
    """PADRE_TRITON_CONV=toeplitz or slab where a module has no tensor-core form (1-D convs):
    the direct form runs, as a GPU would run them (process-wide forcing stays usable with
    such modules about)."""
    import torch

    import padre_compiler as pc

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    module = pc.compile("hyena", dim=8, backend="triton")
    x = torch.randn(2, 9, 8, generator=torch.Generator().manual_seed(0))
    outs = {}
    for form in ("direct", "toeplitz", "slab"):
        monkeypatch.setenv("PADRE_TRITON_CONV", form)
        with torch.no_grad():
            outs[form] = module(x)
    assert torch.equal(outs["toeplitz"], outs["direct"])
    assert torch.equal(outs["slab"], outs["direct"])


@pytest.mark.parametrize("name", ["padre3", "conv2former", "hyena"])
def test_fused_regions_and_fallbacks_are_marked(name: str) -> None:
    source = codegen_path(name, "triton").read_text()
    assert "# fused (triton):" in source
    assert "def dwconv_hadamard_fwd_kernel(" in source
    assert "def naive_dwconv_hadamard(" in source  # the naive twin beside the kernel
    assert "Torch fallback (marked `(torch)` below): " in source
    body = source[source.index("def forward(self"):]
    lines = body.splitlines()
    calls = [k for k, line in enumerate(lines) if "F.linear(" in line]
    assert calls  # each marked on its line, or on the shape comment just above a long one
    for k in calls:
        assert lines[k].rstrip().endswith("(torch)") or lines[k - 1].rstrip().endswith(
            "(torch)"), lines[k]


@pytest.mark.parametrize("name", SPECS)
def test_the_header_names_what_the_module_runs(name: str) -> None:
    """The docstring names dense_for_conv where the forward calls it, the tensor-core forms
    where a 2-D map may take them (a 1-D map runs on CUDA cores), the torch work inside a
    linear attention's call where there is an attention, and the naive twins where there are
    kernels; its lines wrap at spaces only."""
    source = codegen_path(name, "triton").read_text()
    header = ast.get_docstring(ast.parse(source), clean=False)
    body = source[source.index("def forward(self"):]
    assert ("dense_for_conv" in header) == ("dense_for_conv(" in body)
    assert ("dwconv_toeplitz_fwd_kernel on tensor cores" in header) == ("dwconv2d" in header)
    assert ("dwconv_toeplitz_wgrad_kernel" in header) == ("dwconv2d" in header)
    assert ("in torch, the [B, h, e, e] state" in header) == ("linear attention" in header)
    assert ("naive PyTorch twin" in header) == ("Fused Triton kernels: none" not in header)
    assert not any(line.endswith("-") for line in header.splitlines())


def test_padre3_is_three_fused_kernels() -> None:
    """padre3: the 3-wide conv, then two conv ⊙ gate regions accumulating the weighted sum."""
    body = codegen_path("padre3", "triton").read_text().split("def forward(self")[1]
    assert body.count("= dwconv_hadamard(") == 3
    assert "z2, p = dwconv_hadamard(" in body and "p = dwconv_hadamard(" in body
    assert "torch.addcmul" not in body and "_dwconv2d(" not in body
    # the 3D-wide dense map's only reader is the conv: its bias is folded into the conv
    assert body.count("fold_bias=True") == 1
    assert body.count("in_bias=branch123_channel_left_bias") == 1


def test_a_dense_map_read_elsewhere_keeps_its_bias() -> None:
    """The fold needs the conv to be the dense output's only reader (here a gate reads it)."""
    from padre_compiler import dsl

    x = dsl.tokens("grid2d")
    y = dsl.dense(x, "b1", bias=True)
    z = dsl.dwconv2d(y, "a1", kernel=3) * y
    spec = dsl.spec("shared_dense", layout="grid2d", output=dsl.dense(z, "proj"))
    body = generate(spec, dim=4, grid=(3, 3), backend="triton").source.split("def forward(self")[1]
    assert "self.b1_bias, H, 3, 3)[0]" in body  # F.linear (or its GEMM) adds it
    assert "fold_bias" not in body and "in_bias=" not in body


@pytest.mark.parametrize("name", SPECS)
def test_forward_never_rebinds_a_module_level_name(name: str) -> None:
    """A local named like a runtime function (a node labelled linear_attention) would shadow
    it for the whole forward."""
    import ast

    from padre_compiler.backends.triton import _module_names

    tree = ast.parse(codegen_path(name, "triton").read_text())
    forward = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                   and n.name == "forward")
    bound = {t.id for n in ast.walk(forward) if isinstance(n, ast.Assign)
             for t in ast.walk(n.targets[0]) if isinstance(t, ast.Name)}
    assert not bound & _module_names(), bound & _module_names()


def _backward_nodes(y) -> list[str]:
    seen, stack, out = set(), [y.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        out.append(type(fn).__name__)
        stack += [f for f, _ in fn.next_functions]
    return out


def test_split_parts_are_one_call() -> None:
    """The parts of a split are bound by one .split: its backward is one concatenation, where a
    slice per part would zero-fill a full-width gradient each and sum them. (1-D convs: a 2-D
    conv's part is a map of its own, test_conv_input_layout.py.)"""
    import torch

    from padre_compiler import dsl
    from padre_compiler.compiler import compile_module_class

    x = dsl.tokens("sequence")
    ys = [dsl.dense(x, f"b{i}") for i in range(3)]
    z = dsl.dwconv1d(ys[0], "a1", kernel=3) * ys[1] + dsl.dwconv1d(ys[2], "a2", kernel=3)
    spec = dsl.spec("three_parts", layout="sequence", output=dsl.dense(z, "proj"))
    result = generate(spec, dim=4, backend="triton")
    body = result.source.split("def forward(self")[1]
    assert "b0, b1, b2 = b012.split(D, -1)" in body and "[..., " not in body
    module = compile_module_class(result)(4)
    nodes = _backward_nodes(module(torch.randn(2, 9, 4, requires_grad=True)))
    assert "SliceBackward0" not in nodes and nodes.count("SplitBackward0") == 1, nodes


def test_attention_folds_the_normalisations_of_its_q_and_k() -> None:
    """SimA's q and k, l1-normalised over tokens, are normalised inside linear_attention (on
    its state); Castling-ViT's, l2-normalised per row and head, inside its kernels; a
    normaliser with a second reader stays a torch op (its value is needed), and so does a row
    normaliser whose heads are not the attention's."""
    from padre_compiler.backends.triton.linear_attention import folded_normalizers
    from padre_compiler.ir.graph import Node

    sima = codegen_path("sima", "triton").read_text().split("def forward(self")[1]
    assert "_normalize(" not in sima
    assert "linear_attention(wq, wk, wv, 8, q_l1=1e-12, k_l1=1e-12)" in sima
    castling = codegen_path("castling_vit", "triton").read_text().split("def forward(self")[1]
    assert "_normalize(" not in castling and "_l1=" not in castling
    assert "wq, wk, wv, 8, self.w3_scale, q_l2=0.0, k_l2=0.0," in castling

    g = generate("castling_vit", dim=16, backend="triton").graph
    assert sorted(folded_normalizers(g).values()) == ["k_l2", "q_l2"]
    for nid in folded_normalizers(g):  # rows of 4 channels: not the attention's 2-channel heads
        node = g.node(nid)
        g.set_node(nid, dataclasses.replace(node, attrs=tuple(
            (k, 4 if k == "heads" else v) for k, v in node.attrs)))
    assert folded_normalizers(g) == {}

    g = generate("sima", dim=16, backend="triton").graph
    folded = folded_normalizers(g)
    assert sorted(folded.values()) == ["k_l1", "q_l1"]
    norm = next(iter(folded))
    g.add(Node("identity", (), g.node(norm).width, (), "second_reader"), (norm,))
    assert norm not in folded_normalizers(g)


def test_attention_folds_castling_vits_output_normalisation() -> None:
    """Castling-ViT's output, rows(attention + v * d) + dwconv(v), is one linear_attention
    call (head_apply's epilogue): the diagonal's scale becomes res_scale, the conv's output
    post; in the exact_kernel variant res is the broadcast token sum. No fold where the sum
    has a second reader or the normalisation's heads are not the attention's; a diagonal
    with a second reader is stored and read as res."""
    from padre_compiler.backends.triton.linear_attention import folded_outputs
    from padre_compiler.ir.graph import Node

    castling = codegen_path("castling_vit", "triton").read_text().split("def forward(self")[1]
    assert "res=wv, res_scale=_diagonal_scale,\n            out_l2=0.0, post=dconv," in castling
    assert "diagonal = " not in castling and "add = " not in castling

    def castling_folds(change=None) -> tuple:
        g = generate("castling_vit", dim=16, backend="triton").graph
        (attention, fold), = folded_outputs(g).items()
        if change is not None:
            change(g, attention, fold)
        return g, attention, fold, folded_outputs(g)

    g, attention, fold, _ = castling_folds()
    assert g.node(fold.scaled).op == "diagonal" and fold.res == g.inputs(fold.scaled)[0]
    assert fold.res == g.inputs(attention)[2]  # v
    assert g.node(fold.post).op == "dwconv1d" and g.node(g.users(fold.end)[0]).op == "dense"
    exact = generate(load_spec("castling_vit", {"variant": "exact_kernel"}), dim=16,
                     backend="triton").graph
    (_, fold), = folded_outputs(exact).items()
    assert exact.node(fold.res).op == "global_sum" and fold.scaled is not None

    def read(nid_of):  # a second reader of the node nid_of(graph, attention, fold)
        return lambda g, a, f: g.add(Node("identity", (), g.node(nid_of(g, a, f)).width, (),
                                          "reader"), (nid_of(g, a, f),))

    assert castling_folds(read(lambda g, a, f: g.users(a)[0]))[3] == {}
    assert castling_folds(lambda g, a, f: g.set_node(f.norm, dataclasses.replace(
        g.node(f.norm), attrs=tuple((k, 4 if k == "heads" else v)
                                    for k, v in g.node(f.norm).attrs))))[3] == {}
    g, attention, _, folds = castling_folds(read(lambda g, a, f: f.scaled))
    assert folds[attention].scaled is None and g.node(folds[attention].res).op == "diagonal"


def test_a_normalisation_read_as_another_attentions_q_is_folded_once() -> None:
    """Castling-ViT's output normalisation made the q of a second attention (no post term):
    the second attention folds it (q_l2), so the first attention's output is not folded into
    it too, and the generated module computes what the PyTorch backend's does."""
    import torch

    from padre_compiler.backends import pytorch
    from padre_compiler.backends.triton import emit_module
    from padre_compiler.backends.triton.linear_attention import (
        folded_normalizers,
        folded_outputs,
    )
    from padre_compiler.compiler import load_source
    from padre_compiler.ir.graph import Node

    g = generate("castling_vit", dim=16, backend="triton").graph.copy()
    (first, fold), = folded_outputs(g).items()
    _, k, v = g.inputs(first)
    width = g.node(fold.norm).width
    second = g.add(Node("linear_attention", (("heads", 8), ("weighted", False)), width),
                   (fold.norm, g.inputs(k)[0], v))
    g.replace_uses(fold.end, g.add(Node("add", (), width), (second, fold.post)))
    g.prune()
    assert folded_normalizers(g)[fold.norm] == "q_l2" and first not in folded_outputs(g)

    modules = []
    for emit in (emit_module, pytorch.emit_module):
        source = emit(g, g.decls, name="stacked", header="stacked attentions")
        module = load_source(source, "stacked")
        cls = next(c for c in vars(module).values() if isinstance(c, type)
                   and issubclass(c, torch.nn.Module) and c.__module__ == module.__name__)
        modules.append(cls(16).double())
    modules[1].load_state_dict(modules[0].state_dict())
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    assert torch.allclose(modules[0](x), modules[1](x), atol=1e-12)


def test_two_attentions_under_one_normalisation_fold_once() -> None:
    """Two Castling-ViT attentions whose outputs meet in one sum, under one normalisation
    ((l2rows(A1 + v d1) + l2rows(A2 + v d2)) and l2rows(A1 + A2)): each could fold the same
    nodes, so one does and the other's call gives its output, and the generated module
    computes what the PyTorch backend's does (a fold claiming a node twice leaves a value
    unmade: a NameError)."""
    import torch

    import padre_compiler as pc
    from padre_compiler import dsl
    from padre_compiler.backends.triton.linear_attention import folded_outputs

    def attention(x, v, tag):
        q, k = (dsl.normalize(dsl.dense(x, w + tag), kind="l2_rows", heads=4, eps=0.0)
                for w in ("wq", "wk"))
        y = dsl.expand(v, mode="tile", heads=4)
        z = dsl.global_sum(y * dsl.expand(k, mode="replicate", heads=4)) \
            * dsl.expand(q, mode="replicate", heads=4)
        return y, dsl.contract(dsl.diagonal(z, "w3" + tag), keep="tile", heads=4)

    def rows(t):
        return dsl.normalize(t, kind="l2_rows", heads=4, eps=0.0)

    x = dsl.tokens("sequence")
    v = dsl.dense(x, "wv")
    (y1, a1), (y2, a2) = attention(x, v, "a"), attention(x, v, "b")
    branches = rows(dsl.contract(dsl.diagonal(y1, "w1a"), keep="tile", heads=4) + a1) \
        + rows(dsl.contract(dsl.diagonal(y2, "w1b"), keep="tile", heads=4) + a2)
    for name, out in (("branches", branches), ("summed", rows(a1 + a2))):
        spec = dsl.spec(name, layout="sequence", output=dsl.dense(out, "proj", bias=True))
        assert len(folded_outputs(generate(spec, dim=16, backend="triton").graph)) <= 1
        modules = [pc.compile(spec, dim=16, backend=b).double() for b in ("triton", "torch")]
        modules[1].load_state_dict(modules[0].state_dict())
        x_in = torch.randn(2, 9, 16, dtype=torch.float64)
        assert torch.allclose(modules[0](x_in), modules[1](x_in), atol=1e-10), name


def test_modules_share_custom_ops_only_when_their_source_is_the_same(monkeypatch) -> None:
    """The ops' torch.ops namespace is a digest of their source: padre3 and conv2former (the
    same kernel text) share one; a module generated from another text (another revision)
    registers its own, whose op runs that module's launchers, not the first module's."""
    from torch._library.custom_ops import OPDEFS

    from padre_compiler.backends.triton import kernels
    from padre_compiler.compiler import load_source

    def loaded(spec: str):
        result = generate(load_spec(spec), backend="triton", dim=8, grid=(4, 4))
        return load_source(result.source, spec)

    first, same = loaded("padre3"), loaded("conv2former")
    assert first.DWCONV_OPS == same.DWCONV_OPS and first.DWCONV_OPS.startswith("padre_dwconv_")
    monkeypatch.setattr(kernels, "RUNTIME", kernels.RUNTIME + "\n# another revision\n")
    other = loaded("padre3")
    assert other.DWCONV_OPS != first.DWCONV_OPS
    runs = {m: OPDEFS[f"{m.DWCONV_OPS}::dwconv_hadamard_fwd"]._init_fn.__globals__
            for m in (first, other)}  # the globals of the launchers each module's op runs
    assert runs[other] is vars(other)  # its own, registered under its own namespace
    assert runs[first] is not vars(other)  # the first text's op never runs the other's code


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_generated_lines_have_no_joined_continuations(backend: str) -> None:
    """A backslash-newline inside a generator's template string joins two source lines with
    the next line's indent: no two tokens of a generated line are 5 or more spaces apart."""
    import io
    import itertools
    import tokenize

    for name in SPECS:
        source = codegen_path(name, backend).read_text()
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                    tokenize.INDENT, tokenize.DEDENT)]
        for prev, tok in itertools.pairwise(tokens):
            if prev.end[0] == tok.start[0]:
                assert tok.start[1] - prev.end[1] < 5, f"{name}.py:{tok.start[0]}: {tok.line}"


def test_modules_with_and_without_the_tensor_core_form_never_share_custom_ops(monkeypatch
                                                                              ) -> None:
    """padre3 (2-D maps: the tensor-core form carried) and hyena (1-D convs: TENSOR_CORES =
    None) paste the same kernels.py text but not the same conv runtime: their ops live in
    namespaces of their own, each running its own module's launchers. Shared, the module
    loaded second would run the first one's (hyena's convs forced onto padre3's tensor-core
    form, or padre3's onto hyena's direct form alone)."""
    from torch._library.custom_ops import OPDEFS

    from padre_compiler.compiler import load_source

    def loaded(spec: str, grid=None):
        result = generate(load_spec(spec), backend="triton", dim=8, grid=grid)
        return load_source(result.source, spec)

    grid, seq = loaded("padre3", (4, 4)), loaded("hyena")
    assert grid.DWCONV_OPS != seq.DWCONV_OPS
    assert grid.TENSOR_CORES is not None and seq.TENSOR_CORES is None
    for m in (grid, seq):  # the globals of the launchers each module's op runs: its own
        runs = OPDEFS[f"{m.DWCONV_OPS}::dwconv_hadamard_fwd"]._init_fn.__globals__
        assert runs["TENSOR_CORES"] is m.TENSOR_CORES
