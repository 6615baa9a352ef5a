"""The pipeline: spec -> graph -> passes -> backend source -> nn.Module."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import importlib.util
import math
import numbers
import os
import shlex
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from padre_compiler.argtypes import param_flags
from padre_compiler.backends.pytorch import emit_module
from padre_compiler.errors import (
    ArgumentError,
    CertificateError,
    PadreError,
    PrecisionWarning,
    ShapeError,
)
from padre_compiler.ir.graph import Graph, validate_dim
from padre_compiler.ir.names import class_name
from padre_compiler.ir.ops import reference_rules
from padre_compiler.passes import PIPELINE, PIPELINES, PassContext, PassRecord, run_pipeline
from padre_compiler.paths import bundled_stem
from padre_compiler.spec.loader import load_spec
from padre_compiler.spec.model import Spec
from padre_compiler.symbolic.degree import degrees
from padre_compiler.verify.certificate import (
    Certificate,
    CodeCheck,
    certify_graphs,
    check_code,
    small_size,
)
from padre_compiler.verify.lowering import WIDE

BACKENDS = ("torch", "triton")
DEFAULT_TOKENS = 196  # the token count cost-driven passes assume for sequence specs
CERTIFICATE_ELEMENTS = 8192  # tokens x widest feature map of a compile's (reduced) certificate
# set and empty: the default (Path("") is the working directory)
CACHE_DIR = Path(os.environ.get("PADRE_CACHE_DIR") or Path.home() / ".cache" / "padre_compiler")
CACHE_KEEP = 2000  # generated modules the cache keeps; past it the least recently used go
CACHE_IDLE_S = 3600.0  # a module used within this long is kept (a process may be importing it)


@dataclass(frozen=True)
class Compiled:
    """What a compile produces: the optimised graph, the pass log, the module source and the
    certificate that the optimised graph computes the spec's polynomial."""

    spec: Spec
    graph: Graph
    records: list[PassRecord]
    source: str
    backend: str
    certificate: Certificate

    @property
    def kernels(self) -> bool:
        """Whether the module launches Triton kernels (fused regions), not only torch ops."""
        return self.backend == "triton" and "@triton.jit" in self.source

    @property
    def class_name(self) -> str:
        return class_name(self.spec.name)


def as_spec(spec: str | Path | Spec) -> Spec:
    return spec if isinstance(spec, Spec) else load_spec(spec)


def is_int(value: Any) -> bool:
    """An integer: Python's, numpy's or a torch.SymInt (a size torch.compile traces); not a
    bool, a float or a tensor."""
    import torch

    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    """A positive integer (`is_int`)."""
    return is_int(value) and value >= 1


def checked_grid(grid: Any, name: str = "grid") -> tuple[int, int]:
    """grid as (H, W) ints, or an ArgumentError naming the argument `name`: a tuple or list of
    two positive integers (`is_int`)."""
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(map(_count, grid))):
        raise ArgumentError(f"{name}={grid!r}: give (H, W), two positive integers (the token "
                            "grid's rows and columns)")
    return int(grid[0]), int(grid[1])


def checked_size(spec: Spec, dim: Any, grid: Any, tokens: Any = None
                 ) -> tuple[int, tuple[int, int] | None]:
    """(dim, grid) as ints, or an ArgumentError saying which argument is wrong: dim a positive
    integer, grid (H, W) two of them and only for grid2d specs, tokens one where given."""
    if not _count(dim):
        raise ArgumentError(f"dim={dim!r}: give the model width, a positive integer")
    if tokens is not None and not _count(tokens):
        raise ArgumentError(f"tokens={tokens!r}: give a positive integer")
    if grid is None:
        return int(dim), None
    if spec.layout == "sequence":
        raise ArgumentError(f"spec '{spec.name}' is a sequence spec: it takes no grid")
    return int(dim), checked_grid(grid)


def pass_context(spec: Spec, dim: int, grid: tuple[int, int] | None,
                 tokens: int | None = None) -> PassContext:
    if tokens is None:  # a sequence spec: DEFAULT_TOKENS, or fewer where a long filter caps N
        tokens = grid[0] * grid[1] if grid else min([DEFAULT_TOKENS,
                                                     *max_tokens(spec.graph())])
    return PassContext(dim=dim, tokens=tokens, grid=grid)


def optimise(spec: Spec, ctx: PassContext,
             passes: tuple[str, ...] = PIPELINE) -> tuple[Graph, list[PassRecord]]:
    return run_pipeline(spec.graph(), ctx, passes)


def regenerate_command(spec: Spec, backend: str) -> str:
    """What rewrites this file, a line a shell runs: `padre compile` of the bundled spec's
    name (from anywhere), or of the spec file's name (from its folder: the path as typed
    would make the code depend on where it was compiled from), with its --param values (and
    `padre compile --all` for a bundled spec as bundled, whose files are under codegen/);
    compile() of a spec built in Python."""
    path = Path(spec.source)
    if path.suffix != ".toml":
        return "padre_compiler.compile() of the Python spec that built it"
    stem = bundled_stem(spec.source)
    flags = param_flags(spec.params)
    backend_flag = "" if backend == "torch" else f" --backend {backend}"
    command = (f"padre compile {stem or shlex.quote(path.name)}{flags}{backend_flag} "
               "-o FILE")
    return command if spec.params or not stem else f"padre compile --all, or {command}"


def header(spec: Spec, records: list[PassRecord], backend: str) -> str:
    g = records[-1].graph
    deg = degrees(g)[g.output_id]
    lines = [
        f"{spec.name}: {spec.description}" if spec.description else spec.name,
        "",
        f"Generated by padre-compiler ({backend} backend) from {Path(spec.source).name}; "
        "do not edit.",
        f"Regenerate with: {regenerate_command(spec, backend)}",
        f"Layout: {spec.layout}. Degree in X: {deg.top}; monomial degrees {deg}.",
        *textwrap.wrap(f"Passes: {', '.join(r.name for r in records[1:])}.", 96),
    ]
    return "\n".join(lines)


def generate(spec: str | Path | Spec, *, dim: int = 384, grid: tuple[int, int] | None = None,
             backend: str = "torch", tokens: int | None = None) -> Compiled:
    """Run the pipeline up to source code (no module is built)."""
    spec = as_spec(spec)
    dim, grid = checked_size(spec, dim, grid, tokens)
    if backend not in BACKENDS:
        raise ArgumentError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    if spec.fixed_dim is not None and dim != spec.fixed_dim:
        raise ArgumentError(f"{spec.source}: {spec.name} hard-codes its head width and is valid "
                            f"at dim = {spec.fixed_dim} only, not {dim}; compile it with "
                            f"dim={spec.fixed_dim} (--dim {spec.fixed_dim})")
    if spec.layout == "grid2d" and grid is None:
        grid = (14, 14)
    try:  # the passes decide by costs at this width: it must exist
        validate_dim(spec.graph(), dim)
    except ShapeError as err:
        raise ShapeError(f"{spec.source}: {err}") from None
    ctx = pass_context(spec, dim, grid if spec.layout == "grid2d" else None, tokens)
    g, records = optimise(spec, ctx, PIPELINES[backend])
    emit = emit_module
    if backend == "triton":
        from padre_compiler.backends.triton import emit_module as emit
    source = emit(g, g.decls, name=spec.name, header=header(spec, records, backend),
                  fixed_dim=spec.fixed_dim)
    return Compiled(spec, g, records, source, backend, certify_compile(spec, records, ctx))


def certify_compile(spec: Spec, records: list[PassRecord], ctx: PassContext, *,
                    trials: int = 2, full_size: bool = False, seed: int = 0) -> Certificate:
    """The graph certificate of a compile; at a reduced size unless `full_size`."""
    dim, grid, tokens = ctx.dim, ctx.grid, ctx.tokens
    if not full_size:
        dim, grid, tokens = small_size(spec.layout, dim, grid, tokens,
                                       fixed_dim=spec.fixed_dim, graph=records[0].graph)
        if grid is None:  # wide feature maps (expand by T) get fewer tokens, at least 8
            widest = max(node.width.at(dim) for _, node, _ in records[0].graph.items())
            tokens = min(tokens, max(8, CERTIFICATE_ELEMENTS // widest))
    tokens = min([tokens, *max_tokens(records[0].graph)])
    return certify_graphs(spec.name, records[0].graph,
                          [(r.name, r.graph) for r in records[1:]],
                          dim=dim, tokens=tokens, grid=grid, trials=trials, seed=seed)


def load_source(source: str, name: str) -> Any:
    """Import generated source as a module, kept in a content-addressed cache file so that
    tracebacks and `inspect` show the generated lines. The module runs from `source` itself
    (no bytecode cache, no read of the file: another process pruning it cannot break the
    import)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    modname = f"padre_generated_{name}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PadreError(f"cannot make the module cache {CACHE_DIR}: {err.strerror}; set "
                         "PADRE_CACHE_DIR to a writable folder") from None
    path = CACHE_DIR / f"{modname}.py"
    try:
        os.utime(path)  # its last use: prune_cache keeps the most recently used
    except FileNotFoundError:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        tmp.replace(path)
        prune_cache(CACHE_DIR, CACHE_KEEP, CACHE_IDLE_S)
    except OSError:  # a read-only cache: nothing to record
        pass
    module_spec = importlib.util.spec_from_file_location(modname, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[modname] = module
    # the builtin: this module's compile() is the spec compiler
    exec(builtins.compile(source, str(path), "exec"), module.__dict__)
    return module


def prune_cache(directory: Path, keep: int, idle_s: float) -> int:
    """Delete the generated modules (and interrupted writes) of `directory` past the `keep`
    most recently used (last modified: load_source touches what it loads), and any bytecode
    earlier versions cached for them, except what was used within `idle_s` seconds; returns
    how many it deleted. Safe beside other processes pruning or loading: a file that vanishes
    meanwhile is skipped."""

    def last_used(paths: list[Path]) -> list[tuple[float, Path]]:
        found = []
        for path in paths:
            try:
                found.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue
        return sorted(found, reverse=True)

    cutoff = time.time() - idle_s
    modules = last_used([*directory.glob("padre_generated_*.py"),
                         *directory.glob("padre_generated_*.tmp")])
    bytecode = last_used(list(directory.glob("__pycache__/padre_generated_*.pyc")))
    stale = [path for mtime, path in modules[keep:] + bytecode if mtime < cutoff]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def max_tokens(g: Graph) -> list[int]:
    """Sequence lengths the graph supports: explicit long filters cap N."""
    return [g.node(n).a["length"] for n in g.find("long_conv")]


def eager_class(graph: Graph, name: str) -> type:
    """The module class of `graph` lowered op by op to PyTorch, no passes: the "eager twin",
    what a dtype's rounding alone makes of the graph (parameters named as a compiled module's)."""
    twin = f"{name}_eager"
    source = emit_module(graph, graph.decls, name=twin,
                         header=f"{name}: the spec graph lowered op by op (no passes)")
    return getattr(load_source(source, twin), class_name(twin))


def code_size(result: Compiled, dim: int, grid: tuple[int, int] | None, tokens: int,
              max_side: int = 4) -> tuple[int, tuple[int, int] | None, int]:
    """(D, grid, N) at which the generated code is certified: the same graph at D <= 8 (2
    channels a head at least), a grid or sequence that reaches every conv tap
    (verify.certificate.small_size), N within the long filters."""
    graph = result.records[0].graph
    small_dim, small_grid, small_tokens = small_size(
        result.spec.layout, dim, grid, tokens, max_dim=8, max_side=max_side,
        fixed_dim=result.spec.fixed_dim, graph=graph)
    return small_dim, small_grid, min([small_tokens, *max_tokens(graph)])


def code_certificate(result: Compiled, size: tuple[int, tuple[int, int] | None, int],
                     seed: int = 0) -> CodeCheck:
    """verify.certificate.check_code of the generated module at `size` (`code_size`)."""
    dim, grid, tokens = size
    cls = compile_module_class(result)
    probe = construct(cls, dim, grid)
    check = check_code(probe, result.records[0].graph, dim=dim, grid=grid, tokens=tokens,
                       seed=seed)
    if result.kernels:
        check = dataclasses.replace(check, detail=f"{check.detail}; in float64 the fused "
                                    "regions run their PyTorch twins, not the Triton kernels "
                                    "(padre fuzz --backend triton checks those)")
    return check


def construct(cls: type, dim: int, grid: tuple[int, int] | None) -> Any:
    """An instance of a generated module class at width `dim` (and `grid`: grid specs'
    classes take it, sequence specs' do not)."""
    return cls(dim, grid) if grid is not None else cls(dim)


def compile_module_class(result: Compiled) -> type:
    """The nn.Module class of a generated source (width-generic: construct with any dim)."""
    return getattr(load_source(result.source, result.spec.name), result.class_name)


@dataclass(frozen=True)
class Built:
    """What compile() makes once per `build_key` and reuses: the generated class, its compile
    and its certificate (graph certificate plus code check), and per dtype the spec's
    rounding error at the first module's initial weights (`initial_rounding_error`)."""

    result: Compiled
    cls: type
    certificate: Certificate
    rounding: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Both the graph certificate and the code check passed."""
        code = self.certificate.code
        return self.certificate.passed and code is not None and code.passed


BUILT_KEEP = 64  # builds compile() keeps in this process; past it the oldest go
_built: dict[tuple[Any, ...], Built] = {}


def build_key(result: Compiled, dim: int, grid: tuple[int, int] | None) -> tuple[Any, ...]:
    """What a build's class and certificate are a function of, hashable: the spec's content
    (equal for two loads of one file; the certificate evaluates it), the sizes, the generated
    source (the backend, passes and lowering helpers it was made by) and the verifier (the
    reference rules and the code certificate, as they stand)."""
    spec = result.spec
    g = spec.graph()
    content = (spec.name, spec.layout, spec.description, spec.source, spec.fixed_dim,
               param_flags(spec.params), tuple(g.decls.items()), tuple(g.items()))
    return content, dim, grid, result.source, reference_rules.snapshot(), code_certificate


def build(spec: Spec, dim: int, grid: tuple[int, int] | None, backend: str) -> Built:
    """The generated class and its certificate: generated every time (the cheap part of a
    build), loaded and certified once per key (the cache)."""
    import torch

    result = generate(spec, dim=dim, grid=grid, backend=backend)
    key = build_key(result, dim, grid)
    if key in _built:
        return _built[key]
    # the checks run on the CPU, whatever the default device, and draw from a fork of torch's
    # generator: a seeded compile gives the same weights whether its build was cached or not
    with torch.device("cpu"), torch.random.fork_rng(devices=[]):
        code = code_certificate(result, code_size(result, dim, grid, DEFAULT_TOKENS))
    certificate = dataclasses.replace(result.certificate, code=code)
    built = _built[key] = Built(result, compile_module_class(result), certificate)
    while len(_built) > BUILT_KEEP:
        del _built[next(iter(_built))]
    return built


def compile(spec: str | Path | Spec, *, dim: int, backend: str = "torch",
            grid: tuple[int, int] | None = None, dtype: Any = None) -> Any:
    """Compile a spec to an nn.Module mapping x [B, N, dim] -> [B, N, dim].

    spec: a path, the name of a bundled spec ("padre3") or a Spec. For 2-D specs grid=(H, W)
    is required and N = H * W. dtype: the module's (default torch.get_default_dtype(), as
    nn.Linear's). The module carries `.source` (its generated code) and `.compiled` (graph
    and pass log) and `.certificate` (the graph certificate plus an exact check of the
    generated code; see padre_compiler.verify.certificate). A PrecisionWarning says where the
    module's dtype (float64 included, against long double) cannot compute the spec at its
    initial weights (`rounding_error`); a CertificateError (carrying the module and
    certificate) where a certificate fails, on every compile.

    The generated class is loaded and certified once per generated source and spec in a
    process, the rounding check once per dtype too (`build`): a repeated compile (a model's
    blocks) returns a new module of that class with its own, freshly initialised weights.
    """
    import torch

    spec = as_spec(spec)
    if spec.layout == "grid2d" and grid is None:
        raise ArgumentError(f"spec '{spec.name}' mixes tokens on a 2-D grid: pass grid=(H, W)")
    dim, grid = checked_size(spec, dim, grid)
    if isinstance(dtype, str):  # "float64" as torch.float64
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):  # before any work
        raise ArgumentError(f"dtype={dtype!r}: give a floating dtype such as torch.float32 or "
                            "'float64'")
    built = build(spec, dim, grid, backend)
    instance = construct(built.cls, dim, grid)
    instance.source = built.result.source
    instance.compiled = built.result
    instance.certificate = built.certificate
    if not built.passed:
        raise CertificateError(instance, built.certificate)
    instance = instance.to(dtype)
    low = str(dtype).removeprefix("torch.")
    if low in ("float32", "float16", "bfloat16") or (low == "float64" and WIDE):
        if low not in built.rounding:
            built.rounding[low] = initial_rounding_error(built, instance, dim, grid, low)
        error = built.rounding[low]
        if not error <= max(USABLE, 16 * torch.finfo(dtype).eps):
            fix = ("no dtype computes it: lower its surrogates' orders or narrow their ranges"
                   if low == "float64" else
                   "run it in float64: compile(..., dtype=torch.float64)")
            warnings.warn(f"{spec.name} in {low} is off by {error:.1e} relative at its initial "
                          "weights (evaluated op by op on a few tokens: its terms cancel below "
                          f"{low}'s precision or leave its range); {fix}", PrecisionWarning,
                          stacklevel=2)
    return instance


def initial_rounding_error(built: Built, instance: Any, dim: int,
                           grid: tuple[int, int] | None, dtype: str) -> float:
    """`rounding_error` of the spec in `dtype` at the module's own width and initial weights
    (a head's width sets the conditioning of its normalisations), on the code certificate's
    few tokens."""
    import torch

    weights = instance.state_dict()
    if any(v.is_meta for v in weights.values()):  # built under torch.device("meta"):
        # the same initialisation, drawn on the CPU from a fork of torch's generator
        with torch.device("cpu"), torch.random.fork_rng(devices=[]):
            weights = construct(built.cls, dim, grid).state_dict()
    initial = {k: v.detach().double().cpu().numpy() for k, v in weights.items()}
    _, small_grid, small_tokens = code_size(built.result, dim, grid, DEFAULT_TOKENS)
    return rounding_error(built.result.records[0].graph, initial, dim, small_grid,
                          small_tokens, dtype)


USABLE = 1e-2  # relative rounding error of the spec above which compile() warns (or 16 ulp)


def rounding_error(graph: Graph, params: dict[str, Any], dim: int,
                   grid: tuple[int, int] | None, tokens: int, dtype: str = "float32",
                   seed: int = 0) -> float:
    """max |spec in dtype - spec in wider| / max |spec in wider|, the spec evaluated op by op
    (the reference interpreter, numpy) at float64 weights `params` on an N(0, 1) input
    [1, tokens, dim]: how much of the spec rounding to `dtype` alone leaves (NaN: not
    finite). wider: float64, or long double for float64 itself (x86's 64-bit significand;
    verify.lowering.WIDE says whether this platform has one). numpy has no bfloat16: there
    each op runs in float32 and its result is rounded to bfloat16 (to nearest, ties to even),
    as a bfloat16 tensor stores it."""
    import numpy as np

    from padre_compiler.backends.reference import run_graph
    from padre_compiler.ir.ops import EvalContext

    x = np.random.default_rng(seed).standard_normal((1, tokens, dim))
    wider = np.longdouble if dtype == "float64" else np.float64
    ref = run_graph(graph, x.astype(wider), {k: v.astype(wider) for k, v in params.items()},
                    EvalContext(grid=grid))
    post, dtype = (_round_bfloat16, "float32") if dtype == "bfloat16" else (None, dtype)
    cast = post or (lambda v: v)
    with np.errstate(all="ignore"):
        low = run_graph(graph, cast(x.astype(dtype)),
                        {k: cast(v.astype(dtype)) for k, v in params.items()},
                        EvalContext(grid=grid), post=post)
        diff = np.abs(low.astype(wider) - ref)
    if not np.isfinite(diff).all():
        return math.nan
    error, scale = float(diff.max(initial=0.0)), float(np.abs(ref).max(initial=0.0))
    return error / scale if scale else (math.inf if error else 0.0)


def _round_bfloat16(v: Any) -> Any:
    """float32 values rounded to bfloat16's 8 significant bits (to nearest, ties to even),
    kept in float32; NaN stays NaN."""
    import numpy as np

    v = np.asarray(v, dtype=np.float32)
    bits = v.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return np.where(np.isnan(v), v, rounded.view(np.float32))
