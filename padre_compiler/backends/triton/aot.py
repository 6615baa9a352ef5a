"""Ahead-of-time compilation of generated Triton kernels for an H100 (sm_90), on any machine:
what the GPU compiler makes of a kernel when no GPU is at hand.

`triton.compile(ASTSource, target=GPUTarget("cuda", 90, 32))` runs Triton's whole pipeline
(TTIR -> TTGIR -> LLVM IR -> PTX -> ptxas cubin) on the CPU, and `cuobjdump`, which ships with
Triton, reads the cubin's resource usage. Per kernel and launch configuration this reports the
compile time (cold cache), the PTX size, registers per thread, stack bytes per thread (register
spills to local memory), the shared memory a launch requests, which tensor-core instructions
the PTX uses and, from registers and shared memory, how many programs an SM holds at once:
what `legality.py` estimates from the source, here measured by the real compiler.

Compiles are specialised as Triton's JIT specialises a launch whose pointers are 16-byte aligned
and whose integer arguments are multiples of 16 (padre3's C = 384 launches): every pointer and
every integer not in the kernel's `do_not_specialize` carries `tt.divisibility = 16`. Without
those hints the compiler cannot prove channel runs contiguous and emits 2-byte loads where the
GPU run gets 16-byte ones; `aligned=False` compiles without them.

The SASS census (`Census`) disassembles the cubin (`cuobjdump -sass`), finds its loops (backward
branches), and counts warp instructions per program by class, each loop body weighted by the
trip counts the caller names per nesting depth: an estimate of what one program issues. Triton's
software pipelining peels loop iterations into a prologue that is counted once, so the estimate
is a few iterations' worth high. Divided by the outputs a program writes it gives instructions
per output, the static measure the kernels are tuned by here (benchmarks/triton_aot.py).

Each compile runs in a child process: a process that imported Triton under TRITON_INTERPRET=1
(the CPU tests) holds interpreter versions of Triton's own library functions, which the
compiler rejects. The child may import another Triton release than the installed one
(`triton_path`, from `triton_release`): the lent GPU machines carry their own (Triton 3.6.0
beside torch 2.11 on the H200 of benchmarks/results/gpu_padre3.md), and what its compiler makes
of a kernel can differ from what the installed one makes. Kernel signatures follow the
generated kernels' convention: `s_*` arguments and the SCALARS are int32 scalars, every other
non-constexpr argument a pointer (`pointer_dtype`, with per-name exceptions such as the
backward's fp32 accumulators).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from padre_compiler.backends.triton.legality import H100, GpuLimits

SCALARS = ("N", "C", "H", "W", "B", "M", "ROWS")  # integer arguments (and every s_* stride)
FLOATS = ("eps", "out_eps")  # float arguments


@dataclass(frozen=True)
class Resources:
    kernel: str
    config: dict[str, Any] = field(compare=False)
    seconds: float
    ptx_lines: int
    registers: int
    stack: int  # bytes per thread; > 0 means spilled registers in local memory
    shared: int  # shared memory a launch requests (Triton's allocation), bytes
    mma: str  # tensor-core instructions in the PTX: "wgmma" (Hopper), "mma.sync", or "none"
    triton: str  # the version of the Triton that compiled it
    census: Census | None = None  # SASS instruction counts per program (trips given)
    # where stack > 0: the spill stores and reloads (STL, LDL) in the SASS, outside any loop
    # and inside one; a spill only around a loop costs a few instructions per program
    spills: tuple[int, int] | None = None

    def programs_per_sm(self, gpu: GpuLimits = H100) -> int:
        """Programs (thread blocks) one SM holds at once, by registers, shared memory and
        threads: the occupancy the launch can reach, not a measurement."""
        warps = self.config["num_warps"]
        regs = warps * -(-self.registers * 32 // gpu.register_unit) * gpu.register_unit
        return min(gpu.sm_registers // max(regs, 1),
                   gpu.sm_shared_bytes // (self.shared + gpu.shared_reserved),
                   gpu.sm_warps // warps, gpu.sm_blocks)


# SASS opcode prefixes -> class; the first match wins, anything else is "other" (integer and
# address arithmetic, predicates, conversions, moves, branches)
CLASSES = (
    ("LDGSTS", "global->shared copy"), ("LDGDEPBAR", "barrier"), ("LDG", "global load"),
    ("STG", "global store"), ("REDUX", "warp reduction"), ("RED", "global atomic"),
    ("ATOMS", "shared atomic"), ("ATOM", "global atomic"),
    ("LDSM", "shared matrix load"), ("LDS", "shared load"), ("STS", "shared store"),
    ("HGMMA", "tensor core"), ("HMMA", "tensor core"), ("FFMA", "fp32 fma"), ("BAR", "barrier"),
    ("STL", "local store"), ("LDL", "local load"),  # spilled registers
)
LOCAL = ("local store", "local load")


@dataclass(frozen=True)
class Census:
    """Warp instructions one program issues (all its warps), by class, from the SASS.

    `loops` lists each loop's nesting depth (1 = outermost); a body at depth d is weighted by
    trips[0] * ... * trips[d - 1]. `widths` counts global loads by access width in bytes;
    `l1_copies` the global->shared copies that allocate in L1 (LDGSTS without .BYPASS:
    cp.async.ca; cp.async.cg caches in L2 only).
    """
    loops: list[int]
    counts: dict[str, int]
    widths: dict[int, int]
    l1_copies: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def per(self, outputs: int) -> dict[str, float]:
        """Instructions per output element, by class and in total."""
        return {"total": self.total / outputs,
                **{k: v / outputs for k, v in sorted(self.counts.items())}}


def cuobjdump() -> Path | None:
    """The cuobjdump shipped with Triton's NVIDIA backend, if Triton is installed."""
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    tool = root / "backends" / "nvidia" / "bin" / "cuobjdump"
    return tool if tool.exists() else None


def available() -> bool:
    return cuobjdump() is not None


def triton_release(version: str, cache: Path | None = None) -> Path:
    """A folder holding Triton `version` (its wheel for this Python, unpacked; fetched from the
    package index once, with pip), for `compile_kernel(triton_path=...)`."""
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = cache / "padre-compiler" / f"triton-{version}"
    if (root / "triton" / "__init__.py").exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", f"triton=={version}",
                        "--no-deps", "--only-binary=:all:", "--quiet", "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("triton-*.whl")
        staging = root.with_name(root.name + ".partial")
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():  # with the modes (ptxas, cuobjdump: executables)
                path = archive.extract(info, staging)
                if info.external_attr >> 16:
                    os.chmod(path, info.external_attr >> 16 & 0o777)
        staging.rename(root)  # whole or absent: an interrupted fetch leaves no half release
    return root


LAUNCH_OPTIONS = ("num_warps", "num_stages")  # launch options in a config, not constexprs


def constexprs_of(config: dict[str, Any]) -> dict[str, Any]:
    """A launcher's config (tiles and launch options) less its launch options."""
    return {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}


def compile_kernel(path: str | Path, kernel: str, constexprs: dict[str, Any], *,
                   num_warps: int = 4, num_stages: int = 3, pointer_dtype: str = "bf16",
                   pointer_dtypes: dict[str, str] | None = None, capability: int = 90,
                   aligned: bool = True, trips: tuple[int, ...] | None = None,
                   triton_path: Path | None = None) -> Resources:
    """Compile `kernel` of the module file `path` for sm_`capability`; its resources, and with
    `trips` (loop trip counts, outermost first) its SASS census; with `triton_path` (a folder
    from triton_release) by that Triton instead of the installed one."""
    request = dict(path=str(path), kernel=kernel, constexprs=constexprs, num_warps=num_warps,
                   num_stages=num_stages, pointer_dtype=pointer_dtype,
                   pointer_dtypes=pointer_dtypes or {}, capability=capability, aligned=aligned,
                   trips=None if trips is None else list(trips))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if triton_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(triton_path),
                                                          env.get("PYTHONPATH"))))
    with tempfile.TemporaryDirectory() as cache:  # a fresh cache: a cold compile's time
        proc = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(request),
                              capture_output=True, text=True, env=dict(env,
                                                                       TRITON_CACHE_DIR=cache))
    if proc.returncode:
        raise RuntimeError(f"compiling {kernel} of {path} failed:\n{proc.stderr[-3000:]}")
    fields = json.loads(proc.stdout.strip().splitlines()[-1])
    if fields["spills"] is not None:
        fields["spills"] = tuple(fields["spills"])
    if fields["census"] is not None:
        fields["census"] = Census(**{k: ({int(w): n for w, n in v.items()} if k == "widths"
                                         else v) for k, v in fields["census"].items()})
    return Resources(**fields)


def _compile_here(path: str, kernel: str, constexprs: dict[str, Any], num_warps: int,
                  num_stages: int, pointer_dtype: str, pointer_dtypes: dict[str, str],
                  capability: int, aligned: bool, trips: list[int] | None) -> Resources:
    import triton
    from triton.backends.compiler import GPUTarget

    spec = importlib.util.spec_from_file_location("padre_aot_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, kernel)
    constexprs = {**{p.name: p.default for p in fn.params if p.is_constexpr and p.has_default},
                  **constexprs}  # a constexpr left out takes its default, as at a launch
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg in SCALARS or arg.startswith("s_"):
            signature[arg] = "i32"
        elif arg in FLOATS:
            signature[arg] = "fp32"
        else:
            signature[arg] = "*" + pointer_dtypes.get(arg, pointer_dtype)
    unspecialised = {fn.arg_names[i] if isinstance(i, int) else i
                     for i in getattr(fn, "do_not_specialize", ())}
    attrs = {(i,): [["tt.divisibility", 16]] for i, arg in enumerate(fn.arg_names)
             if aligned and signature[arg] != "constexpr" and arg not in unspecialised}
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs,
                                    attrs=attrs)
    t0 = time.perf_counter()
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    seconds = time.perf_counter() - t0
    return resources_of(compiled, kernel, dict(constexprs, num_warps=num_warps,
                                               num_stages=num_stages), seconds, trips)


def resources_of(compiled, kernel: str, config: dict[str, Any], seconds: float,
                 trips: list[int] | tuple[int, ...] | None = None) -> Resources:
    """The Resources of a compiled kernel (`triton.compile`'s, or the JIT's under jit_for_sm:
    both are CompiledKernels); `config` holds its constexprs and launch options."""
    import triton

    usage = _resource_usage(compiled.asm["cubin"], kernel)
    shared = compiled.metadata.shared + usage["SHARED"]  # the launch's dynamic + static
    ptx = compiled.asm["ptx"]
    mma = next((op for op in ("wgmma", "mma.sync") if re.search(rf"\b{re.escape(op)}\b", ptx)),
               "none")
    sass = (_cuobjdump(compiled.asm["cubin"], "-sass")
            if trips is not None or usage["STACK"] else None)
    census = None if trips is None else census_of(sass, trips, config["num_warps"])
    spills = spills_of(sass) if usage["STACK"] else None
    return Resources(kernel, config, seconds, ptx.count("\n"), usage["REG"], usage["STACK"],
                     shared, mma, triton.__version__, census, spills)


def _instructions(sass: str) -> tuple[list[tuple[str, str, int]], list[int]]:
    """(opcode, operand text, loop depth) of each SASS instruction, any predicate guard
    removed, and each loop's nesting depth (1 = outermost), sorted.

    A loop is a backward branch `BRA target` at address a > target; an instruction at depth d
    lies inside d such [target, a] ranges.
    """
    code = [(int(m.group(1), 16), m.group(2), m.group(3)) for m in re.finditer(
        r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][\w.]*)([^;]*);", sass)]
    spans = []
    for addr, op, rest in code:
        target = re.search(r"0x([0-9a-f]+)", rest) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr:
            spans.append((int(target.group(1), 16), addr))
    loops = sorted(sum(lo2 <= lo and hi <= hi2 for lo2, hi2 in spans) for lo, hi in spans)
    return [(op, rest, sum(lo <= addr <= hi for lo, hi in spans))
            for addr, op, rest in code], loops


def _kind(op: str) -> str:
    return next((name for prefix, name in CLASSES if op.startswith(prefix)), "other")


def spills_of(sass: str) -> tuple[int, int]:
    """(outside loops, inside loops): the local-memory instructions (spill stores, reloads)."""
    depths = [d for op, _, d in _instructions(sass)[0] if _kind(op) in LOCAL]
    return sum(d == 0 for d in depths), sum(d > 0 for d in depths)


def census_of(sass: str, trips: list[int] | tuple[int, ...], num_warps: int) -> Census:
    """Count the SASS instructions of one kernel, loop bodies (_instructions) weighted by
    `trips` per depth. Loops nested deeper than `trips` names are an error."""
    code, loops = _instructions(sass)
    deepest = max((d for _, _, d in code), default=0)
    if deepest > len(trips):
        raise ValueError(f"the SASS nests loops {deepest} deep; trips names "
                         f"{len(trips)} trip count(s): {list(trips)}")
    counts: dict[str, int] = {}
    widths: dict[int, int] = {}
    l1_copies = 0
    for op, _, depth in code:
        weight = num_warps
        for t in trips[:depth]:
            weight *= t
        kind = _kind(op)
        counts[kind] = counts.get(kind, 0) + weight
        if kind == "global->shared copy" and ".BYPASS" not in op:
            l1_copies += weight
        if kind == "global load":
            bits = re.search(r"\.(?:U|S)?(8|16|32|64|128)\b", op)
            width = int(bits.group(1)) // 8 if bits else 4
            widths[width] = widths.get(width, 0) + weight
    return Census(loops, counts, widths, l1_copies)


def _cuobjdump(cubin: bytes, flag: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([str(cuobjdump()), flag, str(path)], capture_output=True,
                              text=True, check=True).stdout


def _resource_usage(cubin: bytes, kernel: str) -> dict[str, int]:
    out = _cuobjdump(cubin, "--dump-resource-usage")
    block = out[out.index(f"Function {kernel}"):]
    return {key: int(re.search(rf"\b{key}:(\d+)", block).group(1))
            for key in ("REG", "STACK", "SHARED")}


@contextlib.contextmanager
def jit_for_sm(capability: int = 90) -> Iterator[None]:
    """Triton's JIT aimed at sm_`capability` on a machine without that GPU: `kernel.warmup(...,
    grid=...)` compiles as a launch on such a GPU specialises it (the kernels' `start` under
    COMPILING); nothing can be launched. For a process that imported Triton without
    TRITON_INTERPRET; the driver it had is restored on exit."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.runtime import driver

    class CompileOnly(DriverBase):
        @classmethod
        def is_active(cls) -> bool:
            return False

        def map_python_to_cpp_type(self, ty: str) -> str:  # a launcher's: none is built
            raise RuntimeError("a compile-only driver builds no launcher")

        def get_current_target(self) -> GPUTarget:
            return GPUTarget("cuda", capability, 32)

        def get_active_torch_device(self) -> torch.device:
            return torch.device("cpu")

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def get_benchmarker(self):
            raise RuntimeError("a compile-only driver runs nothing")

    previous = driver._active  # None until a driver was needed (none is on a CPU machine)
    driver.set_active(CompileOnly())
    try:
        yield
    finally:
        driver._active = previous


if __name__ == "__main__":  # the child process of compile_kernel: JSON request in, JSON out
    print(json.dumps(asdict(_compile_here(**json.loads(sys.stdin.read())))))
