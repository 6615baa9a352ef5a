"""Every Triton kernel the bundled specs' modules compile on a GPU, compiled for sm_90 on a CPU.

    .venv/bin/python benchmarks/launch_census.py [--triton-version V] [--specs NAME ...]
        [--defaults-only] [--baseline-rev GIT_REV]
    # writes benchmarks/results/launch_census[_triton-V].{md,json,png}

Each spec's generated Triton module (codegen/triton/) runs a forward and a backward, in bf16
and in fp32, at gpu.py's width (C = 384; a 56 x 56 grid, or 3,136 tokens, 1,000 where a long filter
defines a spec for fewer; batch 1), on the
GPU's code path: the launchers' GPU tiles and conv form, and every candidate a shape's first
launch would time (`fastest`; --defaults-only: the default tiles alone, as PADRE_TRITON_TUNE=0
and deterministic mode launch). Nothing runs: each launch is Triton's JIT compiling the kernel
for sm_90 as that launch specialises it (`aot.jit_for_sm`, `kernel.warmup`), and the outputs
stay unwritten. The census is of what that JIT made: per distinct kernel (below), its
registers, spills, shared memory, programs an SM holds and tensor-core instructions, and the
specs that launch it, and for the conv forward kernels the warp instructions a program issues
per output (its SASS, the tap loops weighted by their trip counts: aot.census_of); a launch
that fails to compile is listed with its error, and a run that fails otherwise, or whose
launcher gave up the tensor-core form for the direct one, is reported as stopped (exit code 1).
PADRE_TRITON_CONV is ignored (the GPU picks the form) and PADRE_TRITON_TUNE set by
--defaults-only alone. Where the CPU
path differs from a GPU's, this follows the GPU's, except the weight gradient's first-launch
candidates (its default tiles only; padre3's are in triton_aot.md). With --triton-version the
census runs in a child process under that Triton release (fetched with pip once): the lent GPU
machine's own. With --baseline-rev, the same for the codegen committed at that git revision.

A distinct kernel is a distinct cubin less its debug sections (code_digest: sha256 of the
other ELF sections, names and bytes, in the cubin's order; a row's "cubin"). Triton compiles
with line info, so a cubin's .debug_line and .nv_debug_ptx_txt (the PTX, .loc lines and .file
paths in it) hold the source file's path and the kernel's line numbers: the same kernel
copied into two specs' modules, or compiled from two checkouts, gives cubins whose machine
code (.text), resource notes (.nv.info) and constants are alike and whose bytes differ.
Whether two such compiles are even two depends on the JIT's disk cache, whose key holds each
jit function's source and first line but no file path (a module whose copy starts on the
same line hits the entry another module's compile left). The debug-less digest is the same
either way.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import struct
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.revisions import source_at  # noqa: E402
from benchmarks.shapes import tokens_for  # noqa: E402

OUT = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
CODEGEN = ROOT / "codegen" / "triton"
DIM, GRID, BATCH = 384, (56, 56), 1
DTYPES = ("bfloat16", "float32")
GPU_CONFIGS = ("dwconv_hadamard_config", "dwconv_toeplitz_config", "dwconv_toeplitz_configs",
               "head_config")  # the launchers' tile functions: `gpu` forced on


def fused_specs(codegen: Path = CODEGEN) -> list[str]:
    """The specs whose generated Triton module (in `codegen`) has kernels of its own."""
    return sorted(p.stem for p in codegen.glob("*.py")
                  if "@triton.jit" in (text := p.read_text()) and "_kernel(" in text)


def on_gpu(fn):
    """fn with its `gpu` argument True, however it is passed."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.arguments["gpu"] = True
        return fn(*bound.args, **bound.kwargs)

    return wrapper


class Compiling:
    """Stands in for a Triton kernel: `kernel[grid](...)` and `kernel.warmup(..., grid=)`
    compile it as that launch specialises it (the JIT, for the active target) and return the
    compiled kernel; each compile, and each failure, is recorded in `seen` with the launch's
    scalar keyword arguments (constexprs and launch options, as "constexprs")."""

    def __init__(self, kernel, name: str, seen: list[dict], where: dict) -> None:
        self.kernel, self.name, self.seen, self.where = kernel, name, seen, where

    def warmup(self, *args, grid, **kwargs):
        record = {"kernel": self.name, **self.where,
                  "constexprs": {k: v for k, v in kwargs.items()
                                 if isinstance(v, (bool, int, float, str))}}
        try:
            compiled = self.kernel.warmup(*args, grid=grid, **kwargs)
        except Exception as err:
            self.seen.append(dict(record, error=f"{type(err).__name__}: {err}"[:300]))
            raise
        self.seen.append(dict(record, compiled=compiled))
        return compiled

    def __getitem__(self, grid):
        return functools.partial(self.warmup, grid=grid)


def load_on_gpu_path(path: Path, seen: list[dict], where: dict):
    """The module at `path`, its launches compiling (Compiling) on the GPU's code path."""
    import torch
    import triton

    spec = importlib.util.spec_from_file_location(f"launch_census_{path.stem}", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    if m.INTERPRETED:
        raise RuntimeError("the launch census needs a process without TRITON_INTERPRET=1")
    m._use_triton = lambda x: x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    for name in GPU_CONFIGS:
        if hasattr(m, name):
            setattr(m, name, on_gpu(getattr(m, name)))
    if hasattr(m, "conv_form"):  # the GPU's choice of form: it reads x.is_cuda and x.dtype
        form = m.conv_form
        m.conv_form = lambda x, *a, **k: form(
            types.SimpleNamespace(is_cuda=True, dtype=x.dtype), *a, **k)
    for name in [n for n in vars(m) if n.endswith("_kernel")]:
        setattr(m, name, Compiling(getattr(m, name), name, seen, where))
    triton.testing.do_bench = lambda fn, **_: 1.0  # nothing runs: every candidate ties
    if hasattr(m, "compile_together"):  # fastest compiles each candidate at its launch
        m.compile_together = lambda configs, launch: None
    return m


def census(path: Path, spec: str, dtype_name: str, seen: list[dict]) -> str | None:
    """Compile every kernel the module at `path` (`spec`'s) launches in a forward and a
    backward at `dtype`; None, or why the run stopped."""
    import torch

    from padre_compiler.backends.triton import aot

    where = {"spec": spec, "dtype": dtype_name}
    m = load_on_gpu_path(path, seen, where)
    cls = next(v for v in vars(m).values()
               if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == m.__name__)
    dtype = getattr(torch, dtype_name)
    takes_grid = "grid" in inspect.signature(cls).parameters
    torch.manual_seed(0)
    model = (cls(DIM, GRID) if takes_grid else cls(DIM)).to(dtype)
    tokens = GRID[0] * GRID[1] if takes_grid else tokens_for(spec, GRID[0] * GRID[1])
    x = torch.randn(BATCH, tokens, DIM, dtype=dtype, requires_grad=True)
    try:
        with aot.jit_for_sm(90):
            model(x).backward(torch.ones(x.shape, dtype=dtype))
    except Exception as err:  # any failure but a first-launch candidate's (fastest skips it)
        return f"{type(err).__name__}: {err}"[:300]
    # a launcher that gave up the tensor-core form fell back to the direct one: a failure too
    # (each record maps a scope or launch key to the error; an earlier revision's codegen,
    # under --baseline-rev, holds a list of errors)
    records = [getattr(m, name, {}) for name in ("TOEPLITZ_FAILED", "WGRAD_FAILED")]
    given_up = [e for r in records for e in (r.values() if isinstance(r, dict) else r)]
    return f"tensor-core form given up: {given_up[0]}"[:300] if given_up else None


def trips_of(kernel: str, c: dict) -> tuple[tuple[int, ...], int] | None:
    """(loop trip counts, outputs a program makes) of the conv forward kernels, for the SASS
    census: the direct kernel loops over the KH x KW taps, the Toeplitz one over the KH row
    taps (in one part: PARTS > 1 nests a loop more)."""
    if kernel == "dwconv_hadamard_fwd_kernel":
        return (c["KH"], c["KW"]), c["BT"] * c["BC"]
    if kernel == "dwconv_toeplitz_fwd_kernel" and c.get("PARTS", 1) == 1:
        return (c["KH"],), c["BC"] * c["BH"] * c["BW"]
    return None


DEBUG_SECTIONS = (".debug", ".nv_debug", ".rela.debug", ".rela.nv_debug")  # name prefixes


def elf_sections(elf: bytes) -> list[tuple[str, bytes]]:
    """(name, contents) of each section of a 64-bit little-endian ELF file (a cubin), in
    its section header order; a section without file contents (SHT_NOBITS) as b""."""
    if elf[:5] != b"\x7fELF\x02" or elf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    entsize, count, names_at = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(count)]
    names = headers[names_at]
    table = elf[names[4]:names[4] + names[5]]
    return [(table[h[0]:table.index(b"\0", h[0])].decode(),
             b"" if h[1] == 8 else elf[h[4]:h[4] + h[5]]) for h in headers]


def code_digest(cubin: bytes) -> str:
    """The census's key of a compiled kernel: sha256 (16 hex digits) of its cubin's
    sections less the debug ones (DEBUG_SECTIONS), each as its name, length and bytes."""
    digest = hashlib.sha256()
    for name, body in elf_sections(cubin):
        if not name.startswith(DEBUG_SECTIONS):
            digest.update(b"%s\0%d\0" % (name.encode(), len(body)))
            digest.update(body)
    return digest.hexdigest()[:16]


def rows_of(seen: list[dict]) -> list[dict]:
    """One row per distinct compiled kernel (code_digest), with every launch that compiled
    it."""
    from padre_compiler.backends.triton import aot

    rows: dict[str, dict] = {}
    for s in seen:
        if "error" in s:
            rows.setdefault(f"error {len(rows)}", {
                "kernel": s["kernel"], "constexprs": s["constexprs"], "error": s["error"],
                "uses": [f"{s['spec']} {s['dtype']}"]})
            continue
        digest = code_digest(s["compiled"].asm["cubin"])
        use = f"{s['spec']} {s['dtype']}"
        if digest in rows:
            if use not in rows[digest]["uses"]:
                rows[digest]["uses"].append(use)
            continue
        config = {"num_warps": s["constexprs"].get("num_warps", 4),
                  "num_stages": s["constexprs"].get("num_stages", 3)}
        trips = trips_of(s["kernel"], s["constexprs"])
        r = aot.resources_of(s["compiled"], s["kernel"], config, 0.0,  # no compile time: the
                             None if trips is None else trips[0])  # JIT's disk cache may hold it
        rows[digest] = {"kernel": s["kernel"], "constexprs": s["constexprs"], "cubin": digest,
                        "registers": r.registers, "stack": r.stack, "spills": r.spills,
                        "shared": r.shared, "programs_per_sm": r.programs_per_sm(),
                        "mma": r.mma, "triton": r.triton, "uses": [use],
                        "per_output": None if trips is None else
                        r.census.per(trips[1])["total"]}
    return list(rows.values())


def run(codegen: Path, specs: list[str], defaults_only: bool) -> dict:
    """In this process: the census of `specs` (their modules in `codegen`) in both dtypes."""
    import triton

    os.environ.pop("PADRE_TRITON_CONV", None)  # the GPU's own choice of conv form
    if defaults_only:
        os.environ["PADRE_TRITON_TUNE"] = "0"
    else:
        os.environ.pop("PADRE_TRITON_TUNE", None)
    seen: list[dict] = []
    stopped = {}
    from rich.progress import track

    for spec, dtype in track([(s, d) for s in specs for d in DTYPES], description="compiling",
                             transient=True):
        why = census(codegen / f"{spec}.py", spec, dtype, seen)
        if why is not None:
            stopped[f"{spec} {dtype}"] = why
    return {"triton": triton.__version__, "defaults_only": defaults_only, "specs": specs,
            "launches": len(seen), "stopped": stopped, "rows": rows_of(seen)}


def table(result: dict) -> list[str]:
    rows = result["rows"]
    failed = [r for r in rows if "error" in r]
    spills = [r for r in rows if r.get("stack", 0) > 0]
    looped = [r for r in spills if r["spills"][1]]
    lines = [f"{result['launches']} launches compiled {len(rows) - len(failed)} distinct "
             f"kernels; {len(failed)} failed to compile; {len(spills)} spill registers "
             f"({len(looped)} inside a loop); runs stopped by an error: "
             f"{len(result['stopped'])}.", ""]
    for use, why in result["stopped"].items():
        lines.append(f"- {use} stopped: `{why}`")
    lines += ["", "| kernel | flags on, tiles | registers | stack bytes (spills: local-memory "
              "instructions outside loops, inside) | shared bytes "
              "| programs / SM | tensor cores | warp instructions / output | launched by |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["kernel"], -r.get("stack", 0), -r.get("registers",
                                                                                    0))):
        flags = ", ".join(k if v is True else f"{k}={v}" for k, v in r["constexprs"].items()
                          if v is not False)
        if "error" in r:
            lines.append(f"| {r['kernel']} | {flags} | failed: `{r['error']}` | | | | | | "
                         f"{'; '.join(r['uses'])} |")
            continue
        per = "-" if r["per_output"] is None else f"{r['per_output']:.2f}"
        stack = f"{r['stack']}" + (f" ({r['spills'][0]}, {r['spills'][1]})" if r["stack"] else "")
        lines.append(f"| {r['kernel']} | {flags} | {r['registers']} | {stack} | "
                     f"{r['shared']} | {r['programs_per_sm']} | {r['mma']} | {per} | "
                     f"{'; '.join(r['uses'])} |")
    return lines


def measure(codegen: Path, specs: list[str], defaults_only: bool,
            triton_version: str | None) -> dict:
    """The census of the modules in `codegen`: in this process, or under `triton_version`'s
    release in a child process."""
    from padre_compiler.backends.triton import aot

    if not triton_version:
        os.environ.pop("TRITON_INTERPRET", None)
        return run(codegen, specs, defaults_only)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(aot.triton_release(triton_version)),
                                                      env.get("PYTHONPATH"))))
    proc = subprocess.run([sys.executable, __file__, "--child", str(codegen), "--specs", *specs,
                           *(["--defaults-only"] if defaults_only else [])],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"the census under Triton {triton_version} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(results: dict[str, dict], path: Path) -> None:
    """Per version: how many distinct kernels hold 1, 2, ... programs an SM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    occupancy = sorted({r["programs_per_sm"] for res in results.values() for r in res["rows"]
                        if "error" not in r})
    width = 0.8 / len(results)
    for i, (label, res) in enumerate(results.items()):
        counts = [sum(r.get("programs_per_sm") == k for r in res["rows"]) for k in occupancy]
        ax.bar([k + i * width for k in range(len(occupancy))], counts, width, label=label)
    ax.set_xticks([k + width * (len(results) - 1) / 2 for k in range(len(occupancy))])
    ax.set_xticklabels(occupancy)
    ax.set_xlabel("programs an SM holds (registers, shared memory)")
    ax.set_ylabel("distinct kernels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", nargs="+", help="default: every spec with fused kernels")
    parser.add_argument("--triton-version", help="compile with this Triton release (pip)")
    parser.add_argument("--defaults-only", action="store_true",
                        help="the default tiles alone, not every first-launch candidate")
    parser.add_argument("--baseline-rev", help="also the codegen committed at this git rev")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    specs = args.specs or fused_specs()
    if args.child:  # under --triton-version's release: the result as JSON on stdout
        print(json.dumps(run(args.child, specs, args.defaults_only)))
        return 0
    from padre_compiler.backends.triton import aot

    if not aot.available():
        sys.exit("Triton with its NVIDIA backend (cuobjdump) is needed: pip install '.[triton]'")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline_rev:
            for spec in specs:  # as <spec>.py, the name the census loads
                source_at(args.baseline_rev, spec, Path(tmp)).rename(Path(tmp) / f"{spec}.py")
            results[f"codegen at {args.baseline_rev}"] = measure(  # where it had kernels
                Path(tmp), [s for s in specs if s in fused_specs(Path(tmp))],
                args.defaults_only, args.triton_version)
        results["current codegen"] = measure(CODEGEN, specs, args.defaults_only,
                                             args.triton_version)
    stem = "launch_census" + (f"_triton-{args.triton_version}" if args.triton_version else "")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{stem}.json").write_text(json.dumps(results, indent=2))
    current = results["current codegen"]
    lines = ["# Every kernel the generated modules compile on a GPU, compiled for sm_90 on a CPU",
             "", "Command: `python benchmarks/launch_census.py " + " ".join(sys.argv[1:]) + "`  ",
             f"Triton {current['triton']}; specs: {', '.join(specs)}; forward and backward in "
             f"{' and '.join(DTYPES)}, C = {DIM}, {GRID[0]} x {GRID[1]} tokens (1,000 where a long "
             f"filter defines a spec for fewer), batch {BATCH}; "
             + ("the default tiles alone." if current["defaults_only"] else
                "every first-launch candidate (the weight gradient's: its default).")
             + f" ![programs an SM holds]({stem}.png)", ""]
    for label, result in results.items():
        lines += [f"## {label}", "", *table(result), ""]
    (OUT / f"{stem}.md").write_text("\n".join(lines))
    plot(results, OUT / f"{stem}.png")
    print("\n".join(line for line in lines if "launches compiled" in line))
    failed = [r for r in current["rows"] if "error" in r]
    return 1 if failed or current["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
