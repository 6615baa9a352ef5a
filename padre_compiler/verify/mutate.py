"""Mutation testing: does verification catch wrong generated code?

Each mutation operator rewrites the generated PyTorch source of a spec at one site (one mutant
per site). A mutant is run through the code certificate at two sizes (`probe_sizes`: exact on
integers, or for specs with surrogates or normalisers numeric, at two probes each) and through
the fuzzer; it is *caught* if either reports a mismatch or the mutant crashes. The unmutated
module must pass both, or no catch means anything. A mutant that both accept is reported as a
*survivor*: equivalent (e.g. swapping the operands of a commutative product) or a change below
both checks' resolution (an eps of 1e-12 doubled), never silently counted as caught.

    python -m padre_compiler.verify.mutate      # writes benchmarks/results/mutations.{md,json}
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from padre_compiler import dsl
from padre_compiler.compiler import compile_module_class, construct, generate, load_source
from padre_compiler.errors import PadreError
from padre_compiler.ir.graph import is_valid_dim, width_step
from padre_compiler.paths import checkout_path
from padre_compiler.spec.loader import bundled_specs, load_spec
from padre_compiler.spec.model import Spec
from padre_compiler.verify.certificate import check_code
from padre_compiler.verify.fuzz import Harness, fuzz

Mutator = Callable[[str], Iterator[str]]
MUTATORS: dict[str, Mutator] = {}


def mutator(name: str) -> Callable[[Mutator], Mutator]:
    def deco(fn: Mutator) -> Mutator:
        MUTATORS[name] = fn
        return fn

    return deco


def _forward(source: str) -> tuple[int, list[str]]:
    """Offset of the forward body and its statement lines."""
    start = source.index("    def forward(self")
    return start, source[start:].split("\n")


def _each_line(source: str, pattern: str, rewrite: Callable[[re.Match[str]], str],
               forward_only: bool = True) -> Iterator[str]:
    """One mutant per match of `pattern` in the forward body (or the whole source)."""
    base = _forward(source)[0] if forward_only else 0
    for m in re.finditer(pattern, source[base:]):
        lo, hi = base + m.start(), base + m.end()
        yield source[:lo] + rewrite(m) + source[hi:]


@mutator("flipped sign")
def flip_sign(source: str) -> Iterator[str]:
    # name = expr  ->  name = -(expr), for every assignment in forward
    # (single-line statements only: a line ending in "(" opens a multi-line expression)
    assignment = r"(?m)^(        [a-z_0-9]+ = )(?!torch\.cat)([^\n]+?[^(\n])(  #.*)?$"
    yield from _each_line(source, assignment,
                          lambda m: f"{m.group(1)}-({m.group(2)}){m.group(3) or ''}")


@mutator("off-by-one padding")
def off_by_one(source: str) -> Iterator[str]:
    # centred window shifted by one token / one grid row, same output shape
    yield from _each_line(source, r"_dwconv1d\(([^\n]*), (\d+), (\d+)\)",
                          lambda m: f"_dwconv1d({m.group(1)}, {int(m.group(2)) + 1}, "
                                    f"{int(m.group(3)) - 1})")
    helper = "    y = F.conv2d(x4, weight.unsqueeze(1), bias, padding=pad, groups=c)"
    if helper in source:
        yield source.replace(helper, (
            "    x4 = F.pad(x4, (pad[1], pad[1], pad[0] + 1, pad[0] - 1))\n"
            "    y = F.conv2d(x4, weight.unsqueeze(1), bias, groups=c)"))


@mutator("transposed grid")
def transposed_grid(source: str) -> Iterator[str]:
    yield from _each_line(source, r"\(H, W\)\)", lambda m: "(W, H))")


@mutator("dropped bias")
def dropped_bias(source: str) -> Iterator[str]:
    yield from _each_line(source, r"self\.[a-z_0-9]+_bias(?=[,)])", lambda m: "None")
    yield from _each_line(source, r" \+ self\.[a-z_0-9]+_bias\b", lambda m: "")


@mutator("convolution on the wrong axis")
def wrong_axis(source: str) -> Iterator[str]:
    line = "    y = F.conv2d(x4, weight.unsqueeze(1), bias, padding=pad, groups=c)"
    if line in source:  # the H taps applied along W and vice versa
        yield source.replace(line, line.replace("weight.unsqueeze(1)",
                                                "weight.transpose(1, 2).unsqueeze(1)")
                             .replace("padding=pad", "padding=pad[::-1]"))
    line = "    y = F.conv2d(xp, weight[:, None, None, :], bias, groups=c)"
    if line in source:  # taps applied in reverse order (correlation vs convolution)
        yield source.replace(line, line.replace("weight[:, None, None, :]",
                                                "weight.flip(-1)[:, None, None, :]"))


@mutator("Hadamard with the wrong operand")
def wrong_operand(source: str) -> Iterator[str]:
    _, lines = _forward(source)
    names = [m.group(1) for ln in lines if (m := re.match(r"        ([a-z_0-9]+) = ", ln))]
    for m in re.finditer(r"(?m)^        ([a-z_0-9]+) = ([a-z_0-9]+) \* ([a-z_0-9]+)(  #.*)?$",
                         source):
        known = names[:names.index(m.group(1))]
        for other in (n for n in ["x", *known] if n not in (m.group(2), m.group(3))):
            mutant = f"        {m.group(1)} = {m.group(2)} * {other}{m.group(4) or ''}"
            yield source[:m.start()] + mutant + source[m.end():]
            break


@mutator("missing normalisation")
def missing_norm(source: str) -> Iterator[str]:
    yield from _each_line(source, r"_normalize\(([a-z_0-9]+), [^\n]*\)", lambda m: m.group(1))


@mutator("wrong causal mask")
def wrong_causal(source: str) -> Iterator[str]:
    def centred(m: re.Match[str]) -> str:
        k = int(m.group(2)) + 1
        return f"_dwconv1d({m.group(1)}, {k // 2}, {k - 1 - k // 2})"

    yield from _each_line(source, r"_dwconv1d\(([^\n]*), (\d+), 0\)", centred)
    yield from _each_line(source, r"torch\.cumsum\(([a-z_0-9]+), 1\)",
                          lambda m: f"{m.group(1)}.sum(1, keepdim=True).expand_as({m.group(1)})")
    helper = "    y = torch.fft.irfft(xf * hf, n=m, dim=1)[:, :n]"
    if helper in source:  # circular instead of linear convolution: the future wraps around
        yield source.replace("n=m,", "n=n,")


@mutator("doubled constant")
def doubled_constant(source: str) -> Iterator[str]:
    # per forward statement: the first and last entries of each tuple of float coefficients
    # (a surrogate's c_0 and c_m) and every other nonzero float literal (an interval bound, a
    # normaliser's eps), x2
    data = source.encode()
    starts = [0, *(i + 1 for i, b in enumerate(data) if b == ord("\n"))]  # ast offsets: bytes
    forward = [n for n in ast.walk(ast.parse(source))
               if isinstance(n, ast.FunctionDef) and n.name == "forward"]
    for statement in forward[0].body if forward else []:
        for node in _constant_sites(statement):
            lo = starts[node.lineno - 1] + node.col_offset
            hi = starts[node.end_lineno - 1] + node.end_col_offset
            yield (data[:lo] + repr(2 * node.value).encode() + data[hi:]).decode()


def _constant_sites(statement: ast.stmt) -> list[ast.Constant]:
    """`doubled_constant`'s literals in `statement`, in source order."""
    def literal(node: ast.expr) -> ast.Constant | None:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            node = node.operand
        return node if isinstance(node, ast.Constant) and type(node.value) is float else None

    sites, in_tuples = [], set()
    for node in ast.walk(statement):
        entries = [literal(e) for e in node.elts] if isinstance(node, ast.Tuple) else []
        if entries and all(entries):
            in_tuples.update(map(id, entries))
            sites += [entries[0]] if len(entries) == 1 else [entries[0], entries[-1]]
    sites += [n for n in ast.walk(statement)
              if isinstance(n, ast.Constant) and type(n.value) is float and id(n) not in in_tuples]
    return sorted((n for n in sites if n.value != 0.0), key=lambda n: (n.lineno, n.col_offset))


def zoo() -> list[Spec]:
    """Sequence specs exercising the operators the bundled image specs lack."""
    x = dsl.tokens("sequence")
    gate = dsl.dwconv1d(dsl.dense(x, "b1", bias=True), "a1", kernel=4, causal=True, bias=True)
    value = dsl.long_conv(dsl.dense(x, "b2"), "h", length=32, skip=True)
    causal = dsl.spec("zoo_causal", layout="sequence",
                      output=dsl.dense(gate * value + dsl.prefix_sum(x), "proj", bias=True))
    q = dsl.normalize(dsl.dense(x, "q"), kind="l1_tokens")
    k = dsl.dwconv1d(dsl.dense(x, "k"), "conv", kernel=3)
    normed = dsl.spec("zoo_norm", layout="sequence", output=dsl.dense(q * k, "proj"))
    return [causal, normed]


@dataclass
class MutantResult:
    spec: str
    kind: str
    site: int
    by_certificate: bool
    by_fuzzer: bool

    @property
    def caught(self) -> bool:
        return self.by_certificate or self.by_fuzzer


SIZES = {"grid2d": [(4, (3, 5)), (3, (4, 2))], "sequence": [(4, None), (5, None)]}


def probe_sizes(spec: Spec) -> list[tuple[int, tuple[int, int] | None]]:
    """The certificate's two (D, grid) probes: SIZES' grids, at the spec's one width, or at
    SIZES' widths (2 and 3 times the head count's multiple where there are heads) raised to
    the next width the graph is valid at (every head and per-head width divides it)."""
    graph = spec.graph()
    step = width_step(graph)
    sizes = []
    for k, (dim, grid) in enumerate(SIZES[spec.layout]):
        d = spec.fixed_dim or (dim if step == 1 else (k + 2) * step)
        while not spec.fixed_dim and not is_valid_dim(graph, d):
            d += step
        sizes.append((d, grid))
    return sizes


def _certificate_catches(cls: type, spec: Spec, lowering: bool = True) -> bool:
    """lowering: hold the eager twin to the reference too (the unmutated module's check;
    a mutant changes the module, not the twin)."""
    graph = spec.graph()
    for seed, (dim, grid) in enumerate(probe_sizes(spec)):
        tokens = grid[0] * grid[1] if grid else 11
        try:
            probe = construct(cls, dim, grid)
            if not check_code(probe, graph, dim=dim, tokens=tokens, grid=grid, seed=seed,
                              lowering=lowering).passed:
                return True
        except Exception:  # a crash is a catch
            return True
    return False


def _fuzzer_catches(cls: type, harness: Harness, examples: int) -> bool:
    """harness: the spec's, shared by its mutants (it memoises the twin's checks)."""
    spec = harness.spec
    harness.cls = cls
    try:
        return fuzz(spec, examples_n=examples, seed=1, harness=harness).failure is not None
    except Exception:
        return True


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def run_mutants(specs: list[Spec], kinds: list[str] | None = None, fuzz_examples: int = 30,
                progress: Callable[[str], None] | None = None) -> list[MutantResult]:
    results = []
    for spec in specs:
        dim = spec.fixed_dim or 384
        result = generate(spec, dim=dim)
        source, original = result.source, compile_module_class(result)
        harness = Harness(spec, "torch")
        # a catch means something only where the original passes both checks
        if _certificate_catches(original, spec) or _fuzzer_catches(original, harness,
                                                                    fuzz_examples):
            raise PadreError(f"{spec.name}: the unmutated module fails the code certificate or "
                             "the fuzzer, so no mutant of it can be judged")
        for kind in kinds or list(MUTATORS):
            for site, mutant in enumerate(MUTATORS[kind](source)):
                if mutant == source or not _parses(mutant):  # not a program: no mutant
                    continue
                name = f"{spec.name}_mutant"
                try:
                    cls = getattr(load_source(mutant, name), result.class_name)
                except Exception:
                    results.append(MutantResult(spec.name, kind, site, True, True))
                    continue
                by_cert = _certificate_catches(cls, spec, lowering=False)
                by_fuzz = _fuzzer_catches(cls, harness, fuzz_examples)
                results.append(MutantResult(spec.name, kind, site, by_cert, by_fuzz))
                if progress is not None:
                    progress(f"{spec.name}: {kind} #{site}")
    return results


def table(results: list[MutantResult]) -> str:
    lines = ["| mutation | mutants | caught by certificate | caught by fuzzer | caught | "
             "survived both |", "|---|---|---|---|---|---|"]
    for kind in MUTATORS:
        rs = [r for r in results if r.kind == kind]
        if not rs:
            lines.append(f"| {kind} | 0 | - | - | - | - |")
            continue
        n = len(rs)
        lines.append(f"| {kind} | {n} | {sum(r.by_certificate for r in rs)}/{n} | "
                     f"{sum(r.by_fuzzer for r in rs)}/{n} | {sum(r.caught for r in rs)}/{n} | "
                     f"{sum(not r.caught for r in rs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(description="mutation testing of generated PyTorch code")
    parser.add_argument("--skip", nargs="*", default=[], metavar="SPEC",
                        help="bundled or zoo specs to leave out")
    args = parser.parse_args(argv)
    console = Console()
    try:  # where the results go, before the mutants run
        out = checkout_path("benchmarks/results", "mutate writes benchmarks/results/")
    except PadreError as err:
        console.print(f"[red]error:[/red] {err}")
        raise SystemExit(2) from None
    specs = [s for s in [load_spec(p) for p in bundled_specs()] + zoo()
             if s.name not in args.skip]
    with console.status("mutating") as status:
        results = run_mutants(specs, progress=lambda s: status.update(f"mutant {s}"))
    out.mkdir(parents=True, exist_ok=True)
    survivors = [r for r in results if not r.caught]
    text = "\n".join([
        "# Mutation testing of generated PyTorch code", "",
        "Command: `python -m padre_compiler.verify.mutate"
        + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)) + "`  ",
        f"Specs: {', '.join(s.name for s in specs)} (zoo_* are sequence specs defined in "
        "padre_compiler/verify/mutate.py). Certificate: at two sizes, exact on integers (numeric, "
        "two probes, for specs with surrogates or normalisers); "
        "fuzzer: 30 hypothesis examples.", "",
        table(results), "",
        "Survivors (equivalent, or below both checks' resolution): " + (", ".join(
            f"{r.spec} {r.kind} #{r.site}" for r in survivors) or "none"), ""])
    (out / "mutations.md").write_text(text)
    (out / "mutations.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    console.print(text)
    sys.exit(0)


if __name__ == "__main__":
    main()
