"""PyTorch backend: graph -> readable, standalone module source (imports only torch).

Each op has one lowering rule in `torch_lowering`: it returns the Python expression computing
the node from its arguments' variable names and its rendered parameters. Ops whose expression
needs more than one line name a helper function from `HELPERS`; the generated file contains
exactly the helpers it uses. Activations stay [B, N, C] throughout; 2-D maps view the token
axis as an H x W grid (row-major), which for a contiguous [B, N, C] tensor is a channels-last
[B, C, H, W] view, so no copy is made.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import keyword
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from padre_compiler.ir.graph import Graph, Node, dim_rules, is_valid_dim
from padre_compiler.ir.names import class_name
from padre_compiler.ir.params import ParamDecl, ParamExpr, render_param
from padre_compiler.ir.registry import RuleTable
from padre_compiler.ir.width import Width

torch_lowering = RuleTable("torch lowering")

HELPERS: dict[str, str] = {
    "dwconv1d": '''
def _dwconv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, left: int,
              right: int) -> torch.Tensor:
    """Depthwise conv along tokens: y[t, c] = sum_j weight[c, j] x[t + j - left, c] (+ bias[c]).

    x: [B, N, C], weight: [C, k] with k = left + right + 1, zero padding. Run as a 1 x k conv2d
    on a channels-last view, so input and output stay [B, N, C]-contiguous (no layout copies).
    """
    b, n, c = x.shape
    if n == 0:  # conv2d refuses a window longer than its padded input: run a zero token, drop it
        return _dwconv1d(torch.cat([x, x.new_zeros(b, 1, c)], 1), weight, bias, left, right)[:, :0]
    xp = F.pad(x, (0, 0, left, right)).unsqueeze(1).permute(0, 3, 1, 2)  # [B, C, 1, N + k - 1]
    y = F.conv2d(xp, weight[:, None, None, :], bias, groups=c)
    return y.permute(0, 2, 3, 1).reshape(b, n, c)
''',
    "dwconv2d": '''
def _dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              grid: tuple[int, int]) -> torch.Tensor:
    """Depthwise 2-D conv on the token grid, centred, zero padding.

    x: [B, N, C], N = H * W row-major; weight: [C, kh, kw] -> [B, N, C].
    y[h, w, c] = sum_{i,j} weight[c, i, j] x[h + i - kh // 2, w + j - kw // 2, c] (+ bias[c]).
    The [B, C, H, W] operand is a permuted view, channels-last in memory, and so is the result
    (transpose + reshape instead gives a batch stride that reads as NCHW at B = 1 and costs two
    layout copies).
    """
    b, n, c = x.shape
    x4 = x.reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)
    pad = (weight.shape[1] // 2, weight.shape[2] // 2)
    y = F.conv2d(x4, weight.unsqueeze(1), bias, padding=pad, groups=c)
    return y.permute(0, 2, 3, 1).reshape(b, n, c)
''',
    "long_conv": '''
def _long_conv(x: torch.Tensor, filt: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """Causal long conv y[t, c] = sum_{s<=t} filt[c, t - s] x[s, c] (+ skip[c] x[t, c]).

    x: [B, N, C], filt: [C, L] with L >= N. FFT of size m, the power of two >= 2N - 1 (no
    wrap-around; exporters' DFTs lose digits at other sizes): O(N log N) per channel, computed
    in at least float32 (half-precision FFTs are unsupported on CPU and lossy on GPU).
    """
    if x.shape[0] == 0:  # torch's CPU FFT refuses an empty batch: run a zero row, drop it
        return _long_conv(torch.cat([x, x.new_zeros(1, *x.shape[1:])]), filt, skip)[:0]
    n = x.shape[1]
    if torch.jit.is_tracing():  # N is a 0-d tensor: m by tensor ops, so the trace follows N
        m = 2 * torch.exp2(torch.log2(n.clamp(min=1).double()).ceil()).long()
    else:
        m = 1 << (2 * n - 1).bit_length()
    work = torch.promote_types(x.dtype, torch.float32)
    xf = torch.fft.rfft(x.to(work), n=m, dim=1)
    hf = torch.fft.rfft(filt[:, :n].transpose(0, 1).to(work), n=m, dim=0)
    y = torch.fft.irfft(xf * hf, n=m, dim=1)[:, :n].to(x.dtype)
    return y if skip is None else y + x * skip
''',
    "expand": '''
def _expand(x: torch.Tensor, heads: int, replicate: bool, times: int | None = None
            ) -> torch.Tensor:
    """Outer-product features per head g: [B, N, h*e] -> [B, N, h*e*t], t = times or e; slot
    (g, c, j) holds x[g, c] (replicate, the matrix E), slot (g, j, m) holds x[g, m] (tile, F)."""
    b, n, w = x.shape
    e = w // heads
    t = e if times is None else times
    xh = x.reshape(b, n, heads, e)
    if replicate:
        out = xh.unsqueeze(-1).expand(b, n, heads, e, t)
    else:
        out = xh.unsqueeze(-2).expand(b, n, heads, t, e)
    return out.reshape(b, n, heads * e * t)
''',
    "contract": '''
def _contract(x: torch.Tensor, heads: int, keep_tile: bool, times: int | None = None
              ) -> torch.Tensor:
    """Per head, [B, N, h*e*t] -> [B, N, h*e] (t = times, or e when absent): slots (g, j, m)
    summed over j (keep_tile) or slots (g, c, j) summed over j."""
    b, n, w = x.shape
    e = round((w // heads) ** 0.5) if times is None else w // (heads * times)
    t = e if times is None else times
    shape = (b, n, heads, t, e) if keep_tile else (b, n, heads, e, t)
    return x.reshape(shape).sum(3 if keep_tile else 4).reshape(b, n, heads * e)
''',
    "linear_attention": '''
def _linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per head g: q_g (W_g ⊙ k_g^T v_g), the re-associated (Q K^T) V; W [h*e*e] slot-wise
    weights (None: 1). [B, N, h*e] each -> [B, N, h*e].

    Never forms the [B, N, h*e*e] outer products nor the N x N matrix: O(N e^2) per head. The
    state and its weighting are float32 at least (as in the Triton kernels), the result q's
    dtype: a state rounded to bfloat16 rounds every q_t's product once more, which a sum that
    cancels downstream (Castling-ViT's V term before its l2 normalisation) amplifies past the
    eager twin's error.
    """
    b, n, w = q.shape
    e = w // heads
    acc = torch.promote_types(q.dtype, torch.float32)
    qh, kh, vh = (t.reshape(b, n, heads, e).to(acc) for t in (q, k, v))
    state = torch.einsum("bshc,bshm->bhcm", kh, vh)  # [B, h, e, e] = K^T V
    if weight is not None:
        state = state * weight.view(heads, e, e).to(acc)
    return torch.einsum("bthc,bhcm->bthm", qh, state).reshape(b, n, w).to(q.dtype)
''',
    "normalize": '''
def _normalize(x: torch.Tensor, kind: str, heads: int, eps: float) -> torch.Tensor:
    """l1_tokens: x[t, c] / (sum_s |x[s, c]| + eps); l2_rows: x[t, g] / (|x[t, g]|_2 + eps);
    l1_rows: x[t, g] / (|x[t, g]|_1 + eps), g the channels of one head. Norm, eps and quotient
    are float32 at least, the result x's dtype: in float16 a norm overflows past 65504 and an
    eps below 6e-8 (SimA's 1e-12) is 0, which made an all-zero column 0 / 0. The rows' norms
    [B, N, heads] are repeated to [B, N, w] and divide x itself: autograd saves no view of x
    by heads, which Inductor's stride ordering cannot place at a dynamic token count
    (pytorch/pytorch#185510)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    if kind == "l1_tokens":
        return (x / (x.abs().sum(1, keepdim=True, dtype=acc) + eps)).to(x.dtype)
    b, n, w = x.shape
    p = 1 if kind == "l1_rows" else 2
    norm = torch.linalg.vector_norm(x.reshape(b, n, heads, w // heads), ord=p, dim=-1,
                                    dtype=acc)  # [B, N, heads]
    return (x / (norm.repeat_interleave(w // heads, -1) + eps)).to(x.dtype)
''',
    "poly": '''
def _chebyshev(x: torch.Tensor, coeffs: tuple[float, ...], lo: float, hi: float) -> torch.Tensor:
    """sum_k coeffs[k] T_k(u), u = (2x - lo - hi) / (hi - lo), by Clenshaw's recurrence.

    The constants are tensors in x's dtype: an exporter may round Python floats to float32.
    """
    *c, shift, width = x.new_tensor((*coeffs, lo + hi, hi - lo)).unbind()
    u = (2 * x - shift) / width
    b1 = b2 = torch.zeros_like(u)
    for ck in reversed(c[1:]):
        b1, b2 = ck + 2 * u * b1 - b2, b1
    return c[0] + u * b1 - b2
''',
}


@dataclass(frozen=True)
class Lowered:
    node: Node
    args: list[str]
    params: dict[str, str]

    def param(self, role: str) -> str:
        return self.params.get(role, "None")


def _times_arg(times: int | str | None) -> str:
    """The optional `times` argument of _expand/_contract: D (the forward's width) for "dim"."""
    return "" if times is None else ", D" if times == "dim" else f", {times}"


def _expr(fmt: str) -> Callable[[Lowered], str]:
    return lambda low: fmt.format(*low.args, **low.params, **low.node.a)


torch_lowering.register("input")(lambda low: "x")
torch_lowering.register("output", "identity")(lambda low: low.args[0])
torch_lowering.register("diagonal")(_expr("{0} * {scale}"))
torch_lowering.register("bias")(_expr("{0} + {bias}"))
torch_lowering.register("hadamard")(_expr("{0} * {1}"))
torch_lowering.register("add")(lambda low: " + ".join(low.args))
torch_lowering.register("prefix_sum")(_expr("torch.cumsum({0}, 1)"))
torch_lowering.register("global_sum")(_expr("{0}.sum(1, keepdim=True).expand_as({0})"))
torch_lowering.register("dense")(lambda low: f"F.linear({low.args[0]}, {low.param('weight')}, "
                                             f"{low.param('bias')})")
torch_lowering.register("dwconv2d")(lambda low: f"_dwconv2d({low.args[0]}, {low.param('weight')}, "
                                                f"{low.param('bias')}, (H, W))")
torch_lowering.register("long_conv")(lambda low: f"_long_conv({low.args[0]}, "
                                                 f"{low.param('filter')}, {low.param('skip')})")
torch_lowering.register("expand")(lambda low: f"_expand({low.args[0]}, {low.node.a['heads']}, "
                                              f"{low.node.a['mode'] == 'replicate'}"
                                              f"{_times_arg(low.node.a.get('times'))})")
torch_lowering.register("contract")(lambda low: f"_contract({low.args[0]}, {low.node.a['heads']}, "
                                                f"{low.node.a['keep'] == 'tile'}"
                                                f"{_times_arg(low.node.a.get('times'))})")
torch_lowering.register("linear_attention")(
    lambda low: f"_linear_attention({', '.join(low.args)}, {low.node.a['heads']}"
                + (f", {low.param('state')})" if low.node.a["weighted"] else ")"))
torch_lowering.register("normalize")(_expr("_normalize({0}, {kind!r}, {heads}, {eps!r})"))
torch_lowering.register("poly")(_expr("_chebyshev({0}, {coeffs!r}, {lo!r}, {hi!r})"))


@torch_lowering.register("scaled_sum")
def _lower_scaled_sum(low: Lowered) -> str:
    # s_0 x_0 + s_1 x_1 + ...: one pass per term, accumulated in place into the fresh product
    # s_0 x_0 (autograd-safe: no backward rule saves the accumulator's value)
    terms = [f"({low.args[0]} * {low.params['scale0']})"]
    terms += [f".addcmul_({arg}, {low.params[f'scale{k}']})"
              for k, arg in enumerate(low.args[1:], 1)]
    return "(\n" + "".join(f"    {t}\n" for t in terms) + ")"


@torch_lowering.register("dwconv1d")
def _lower_dwconv1d(low: Lowered) -> str:
    k = low.node.a["kernel"]
    left, right = (k - 1, 0) if low.node.a["causal"] else (k // 2, k // 2)
    return f"_dwconv1d({low.args[0]}, {low.param('weight')}, {low.param('bias')}, {left}, {right})"


@torch_lowering.register("split")
def _lower_split(low: Lowered) -> str:
    # all parts in one call, bound together by split_targets: its backward concatenates the
    # parts' gradients in one pass (a slice per part zero-fills a full-width gradient each)
    w = low.node.width.render("D")
    return f"{low.args[0]}.split({w}, -1)"


def split_targets(g: Graph, names: dict[int, str]) -> dict[int, str]:
    """Per split node, the target of the statement binding every part of its source: "a, b, c"
    on the part first in graph order, "" on the others (bound there already). fuse_siblings
    makes a split's parts together, one per member it fuses: each part is in the graph."""
    groups: dict[tuple[int, int], list[int]] = {}
    for nid, node, inputs in g.items():
        if node.op == "split":
            groups.setdefault((inputs[0], node.a["parts"]), []).append(nid)
    targets = {}
    for (_, parts), nids in groups.items():
        by_index = sorted(nids, key=lambda n: g.node(n).a["index"])
        assert [g.node(n).a["index"] for n in by_index] == list(range(parts)), by_index
        targets |= dict.fromkeys(nids, "")
        targets[nids[0]] = ", ".join(names[n] for n in by_index)
    return targets


# module assembly ------------------------------------------------------------------------------
def _ascii(label: str) -> str:
    """Greek letters by name (Δ -> delta), accents dropped (K̂ -> K); other symbols kept."""
    out = []
    for ch in label:
        name = "" if ch.isascii() else unicodedata.name(ch, "")
        if name.startswith("GREEK"):
            out.append(f"_{name.split()[-1].lower()}_")
        elif not unicodedata.combining(ch):
            out.append(ch)
    return "".join(out)


# names a generated forward may not bind: its own locals (x, grid, B, N, D, H, W), the
# module's imports, Python's keywords and builtins
RESERVED = frozenset({"x", "grid", "B", "N", "D", "H", "W", "self", "torch", "F", "nn",
                      *keyword.kwlist, *dir(builtins)})


def var_names(g: Graph, reserved: frozenset[str] = frozenset()) -> dict[int, str]:
    """A distinct Python name per node, from its label; never one of RESERVED or `reserved`
    (the module-level names a backend's preamble defines)."""
    names: dict[int, str] = {}
    used: set[str] = set(RESERVED | reserved)
    for nid, node, _ in g.items():
        if node.op == "input":
            names[nid] = "x"
            continue
        base = re.sub(r"[^0-9a-zA-Z_]", "_", _ascii(node.label)).strip("_").lower() or node.op
        if base[0].isdigit():
            base = f"t{base}"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names[nid] = name
    return names


def _wrap(code: str) -> str:
    """One list element per line for long torch.cat([...]) expressions."""
    if len(code) < 70 or not code.startswith("torch.cat(["):
        return code
    items = code[len("torch.cat(["):-len("], 0)")].split(", ")
    return "torch.cat([\n" + "".join(f"    {item},\n" for item in items) + "], 0)"


def _wrap_call(stmt: str, width: int = 90) -> str:
    """`name = f(a, b, c)` longer than `width` -> one argument per line."""
    head, _, call = stmt.partition(" = ")
    open_at = call.find("(")
    if len(stmt) <= width or open_at < 0 or not call.endswith(")"):
        return stmt
    args, depth, start = [], 0, open_at + 1
    for i, ch in enumerate(call[open_at + 1:-1], open_at + 1):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            args.append(call[start:i].strip())
            start = i + 1
    args.append(call[start:-1].strip())
    inner = "".join(f"    {_wrap_tuple(a, width)},\n" for a in args)
    return f"{head} = {call[:open_at + 1]}\n{inner})"


def _wrap_tuple(arg: str, width: int) -> str:
    """A long literal tuple of numbers -> rows of at most `width` characters."""
    if len(arg) <= width or not (arg.startswith("(") and arg.endswith(")")) or \
            any(ch in arg[1:-1] for ch in "()[]"):
        return arg
    rows, row = [], ""
    for item in arg[1:-1].split(", "):
        if row and len(row) + len(item) + 10 > width:
            rows.append(row)
            row = ""
        row += f"{item}, "
    rows.append(row)
    return "(\n" + "".join(f"        {r.rstrip()}\n" for r in rows) + "    )"


def _init_lines(decls: dict[str, ParamDecl]) -> list[str]:
    """reset_parameters' body: each op's default init, then the spec's own ranges."""
    lines: list[str] = []
    ranges = {n: d.init_range for n, d in decls.items() if d.init_range is not None}
    default = {n: d for n, d in decls.items() if n not in ranges}
    uniform = [(n, d) for n, d in default.items() if d.init == "uniform"]
    if uniform:
        lines.append("for name, fan_in in (")
        lines += [f"    ({n!r}, {d.fan_in.render('D')})," for n, d in uniform if d.fan_in]
        lines += ["):", "    bound = fan_in ** -0.5",
                  "    nn.init.uniform_(getattr(self, name), -bound, bound)"]
    for init in ("ones", "zeros"):
        lines += [f"nn.init.{init}_(self.{n})" for n, d in default.items()
                  if d.init == init and d.copies is None]
    copies = {n: d.copies.render("D") for n, d in default.items() if d.copies is not None}
    lines += [f"nn.init.constant_(self.{n}, 1 / {c if c.isdigit() else f'({c})'})  # 1 / the "
              "copies its contract sums" for n, c in copies.items()]
    if ranges:
        lines.append("# the spec's own ranges (its init=...)")
        lines += [f"nn.init.uniform_(self.{n}, {lo!r}, {hi!r})" for n, (lo, hi) in ranges.items()]
    return lines


def param_codes(params: tuple[tuple[str, ParamExpr], ...], owner: str,
                body: list[str]) -> dict[str, str]:
    """Source for each parameter role; composite expressions (products, concatenations) are
    prepared once per call into `_<owner>_<role>` locals appended to `body` (the underscore:
    node variables never start with one, so no op's name can make them collide)."""
    out = {}
    for role, expr in params:
        code = render_param(expr, lambda leaf: f"self.{leaf}")
        if expr.fn != "leaf":
            body.append(f"_{owner}_{role} = {_wrap(code)}")
            code = f"_{owner}_{role}"
        out[role] = code
    return out


def statement(var: str, code: str, width: Width, note: str = "") -> str:
    """`var = code` with its shape as a comment, wrapped to the line length."""
    stmt, shape = f"{var} = {code}", f"# [B, N, {width}]{note}"
    if "\n" in stmt:  # laid out by its lowering rule
        return f"{shape}\n{stmt}"
    if len(stmt) + len(shape) < 90:
        return f"{stmt}  {shape}"
    return f"{shape}\n{_wrap_call(stmt)}"


def docstring_literal(text: str) -> str:
    """`text` as the body of a triple-quoted literal whose value is `text`: backslashes,
    quotes, control characters other than newlines and lone surrogates escaped (a spec's
    description is free text; unescaped, a triple quote in it would end the docstring and run
    the rest, and a surrogate cannot be written as UTF-8)."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 and c != "\n" else
                   f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def module_source(g: Graph, decls: dict[str, ParamDecl], *, name: str, docstring: str,
                  preamble: list[str], body: list[str], fixed_dim: int | None = None) -> str:
    """The module file: docstring, imports and helpers (`preamble`), then the class with
    parameters named after the spec, their initialisation and `forward` running `body`.
    fixed_dim: the only width the graph is valid at (the constructor refuses others)."""
    grid = g.layout == "grid2d"
    sig = "self, dim: int, grid: tuple[int, int]" if grid else "self, dim: int"
    rules = dim_rules(g)
    if fixed_dim is not None:
        checks = [f"if dim != {fixed_dim}:",
                  f"    raise ValueError(f\"{name} hard-codes its head width: dim must be "
                  f"{fixed_dim}, got {{dim}}\")"]
    elif rules:  # integer widths that split into their heads: (n, p, m) with n dim^p % m == 0
        valid = ", ".join(str(d) for d in itertools.islice(
            (d for d in range(1, 2**16) if is_valid_dim(g, d)), 3))
        checks = [f"if any(n * dim**p % m for n, p, m in {tuple(rules)!r}):",
                  f"    raise ValueError(f\"{name}: at dim={{dim}} a width does not split into "
                  f"its heads (valid: {valid}, ...)\")"]
    else:
        checks = []
    init = ["super().__init__()", *checks, "self.dim = dim",
            *(["self.grid = (int(grid[0]), int(grid[1]))"] if grid else []), "D = dim"]
    for pname, decl in decls.items():
        shape = ", ".join(w.render("D") for w in decl.shape)
        init.append(f"self.{pname} = nn.Parameter(torch.empty({shape}))")
    init.append("self.reset_parameters()")
    fwd_doc = ('"""x: [B, N, dim], N = H * W (row-major), (H, W) = grid or self.grid -> '
               '[B, N, dim]."""' if grid else '"""x: [B, N, dim] -> [B, N, dim]."""')
    check = ["B, N, _ = x.shape", *(["D = self.dim"] if _reads_d(body) else [])]
    if grid:  # the grid is a local: calls at different grids share nothing
        check += ["H, W = self.grid if grid is None else grid",
                  "if N != H * W:",
                  '    raise ValueError(f"{N} tokens do not fill the {H} x {W} grid (N must equal '
                  'H * W)")']
    lengths = [g.node(n).a["length"] for n in g.find("long_conv")]
    if lengths:  # the spec is defined up to its shortest long filter (y[t] reads filt[t - s])
        check += [f"if N > {min(lengths)}:",
                  f'    raise ValueError(f"{{N}} tokens: the long convolution\'s filter has '
                  f'{min(lengths)} taps; "',
                  f'                     "the spec is defined for N <= {min(lengths)}")']
    ind = "        "
    parts = [f'"""{docstring_literal(docstring)}"""', "", *preamble]
    parts += ["", f"class {class_name(name)}(nn.Module):",
              f'    """{name}: [B, N, dim] -> [B, N, dim]. Parameters are named after the spec."""',
              "", f"    def __init__({sig}) -> None:"]
    parts += [ind + line for line in init]
    inits = _init_lines(decls) or ["pass  # no parameters"]
    parts += ["", "    def reset_parameters(self) -> None:",
              *([ind + "D = self.dim"] if _reads_d(inits) else [])]
    parts += [ind + line for line in inits]
    fwd_sig = "self, x: torch.Tensor" + (", grid: tuple[int, int] | None = None" if grid else "")
    parts += ["", f"    def forward({fwd_sig}) -> torch.Tensor:", ind + fwd_doc]
    parts += [ind + line for stmt in check + free_after_last_use(body)
              for line in stmt.split("\n")]
    return without_unused_imports("\n".join(parts) + "\n")


def _reads_d(lines: list[str]) -> bool:
    """Whether these statements read the model width's local, D."""
    return any(isinstance(n, ast.Name) and n.id == "D" and isinstance(n.ctx, ast.Load)
               for n in ast.walk(ast.parse("\n".join(lines))))


def without_unused_imports(source: str) -> str:
    """source less its imports (top level, or in a top-level try that keeps a statement) whose
    names it never reads: one import preamble serves every generated file, each using part."""
    tree = ast.parse(source)
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}

    def unused(st: ast.stmt) -> bool:
        return isinstance(st, (ast.Import, ast.ImportFrom)) and not any(
            (a.asname or a.name).split(".")[0] in read for a in st.names)

    drop = [st for st in tree.body if unused(st)]
    for st in tree.body:
        if isinstance(st, ast.Try) and not all(unused(b) for b in st.body):
            drop += [b for b in st.body if unused(b)]
    lines = source.split("\n")
    for st in sorted(drop, key=lambda st: st.lineno, reverse=True):
        del lines[st.lineno - 1:st.end_lineno]
    return "\n".join(lines)


def free_after_last_use(body: list[str]) -> list[str]:
    """`body` with `del a, b` after the statement that reads each local for the last time.

    A forward's locals otherwise live until it returns, so every intermediate is held at once
    and each call allocates fresh memory (with glibc, freshly faulted pages); released at their
    last use, they go back to the allocator while the forward runs and the next intermediate
    of the same size reuses them. Autograd keeps whatever it saved for backward regardless.
    """
    stores: list[set[str]] = []
    loads: list[set[str]] = []
    for stmt in body:
        names = [n for n in ast.walk(ast.parse(stmt)) if isinstance(n, ast.Name)]
        stores.append({n.id for n in names if isinstance(n.ctx, ast.Store)})
        loads.append({n.id for n in names if isinstance(n.ctx, ast.Load)})
    last: dict[str, int] = {}
    for i, (stored, loaded) in enumerate(zip(stores, loads, strict=True)):
        for local in stored | (loaded & set(last)):
            last[local] = i
    out = []
    for i, stmt in enumerate(body):
        out.append(stmt)
        dead = sorted(n for n, k in last.items() if k == i)
        if dead and not stmt.startswith("return"):
            out.append(f"del {', '.join(dead)}")
    return out


def helper_sources(helpers: list[str]) -> list[str]:
    return [line for h in helpers for line in ("", HELPERS[h].strip("\n"), "")]


def lower_node(nid: int, node: Node, inputs: tuple[int, ...], names: dict[int, str],
               body: list[str], used_helpers: list[str]) -> str:
    """The expression computing `node` by its torch lowering rule; composite parameters are
    prepared into `body`, and a helper the rule calls is recorded in `used_helpers`."""
    params = param_codes(node.params, names[nid], body)
    if node.op in HELPERS and node.op not in used_helpers:
        used_helpers.append(node.op)
    return torch_lowering[node.op](Lowered(node, [names[i] for i in inputs], params))


def return_statement(g: Graph, nid: int, code: str) -> str:
    """`return code` for the output node `nid`: a fresh, contiguous tensor, as any layer's
    (global_sum's broadcast is a stride-0 view, which refuses in-place updates; the input
    itself would alias the caller's)."""
    producer = g.node(g.inputs(nid)[0]).op
    suffix = {"global_sum": ".contiguous()", "input": ".clone()"}.get(producer, "")
    return f"return {code}{suffix}"


def emit_module(g: Graph, decls: dict[str, ParamDecl], *, name: str, header: str,
                fixed_dim: int | None = None) -> str:
    """Python source of an nn.Module named after the spec that computes graph `g`."""
    names = var_names(g)
    body: list[str] = []
    used_helpers: list[str] = []
    splits = split_targets(g, names)
    for nid, node, inputs in g.items():
        if splits.get(nid) == "":
            continue  # bound with its first sibling
        code = lower_node(nid, node, inputs, names, body, used_helpers)
        if node.op == "output":
            body.append(return_statement(g, nid, code))
        elif node.op == "split":
            body.append(statement(splits[nid], code, node.width, " each"))
        elif node.op != "input":
            body.append(statement(names[nid], code, node.width))
    preamble = ["import torch", "import torch.nn.functional as F", "from torch import nn", "",
                *helper_sources(used_helpers)]
    return module_source(g, decls, name=name, docstring=header, preamble=preamble, body=body,
                         fixed_dim=fixed_dim)
