"""Ahead-of-time compilation of generated Triton kernels for an H100 (sm_90), on any machine:
what the GPU compiler makes of a kernel when no GPU is at hand.

`triton.compile(ASTSource, target=GPUTarget("cuda", 90, 32))` runs Triton's whole pipeline
(TTIR -> TTGIR -> LLVM IR -> PTX -> ptxas cubin) on the CPU, and `cuobjdump`, which ships with
Triton, reads the cubin's resource usage. Per kernel and launch configuration this reports the
compile time (cold cache), the PTX size, registers per thread, stack bytes per thread (register
spills to local memory), static shared memory and which tensor-core instructions the PTX uses:
what `legality.py` estimates from the source, here measured by the real compiler.

Each compile runs in a child process: a process that imported Triton under TRITON_INTERPRET=1
(the CPU tests) holds interpreter versions of Triton's own library functions, which the
compiler rejects. Kernel signatures follow the generated kernels' convention: `s_*` arguments
and N, C, H, W are int32 scalars, every other non-constexpr argument a pointer
(`pointer_dtype`, with per-name exceptions such as the backward's fp32 accumulators).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCALARS = ("N", "C", "H", "W")


@dataclass(frozen=True)
class Resources:
    kernel: str
    config: dict[str, Any] = field(compare=False)
    seconds: float
    ptx_lines: int
    registers: int
    stack: int  # bytes per thread; > 0 means spilled registers in local memory
    shared: int  # static shared memory, bytes
    mma: str  # tensor-core instructions in the PTX: "wgmma" (Hopper), "mma.sync", or "none"


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


def compile_kernel(path: str | Path, kernel: str, constexprs: dict[str, Any], *,
                   num_warps: int = 4, num_stages: int = 3, pointer_dtype: str = "bf16",
                   pointer_dtypes: dict[str, str] | None = None,
                   capability: int = 90) -> Resources:
    """Compile `kernel` of the module file `path` for sm_`capability`; its resources."""
    request = dict(path=str(path), kernel=kernel, constexprs=constexprs, num_warps=num_warps,
                   num_stages=num_stages, pointer_dtype=pointer_dtype,
                   pointer_dtypes=pointer_dtypes or {}, capability=capability)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as cache:  # a fresh cache: a cold compile's time
        proc = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(request),
                              capture_output=True, text=True, env=dict(env,
                                                                       TRITON_CACHE_DIR=cache))
    if proc.returncode:
        raise RuntimeError(f"compiling {kernel} of {path} failed:\n{proc.stderr[-3000:]}")
    return Resources(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _compile_here(path: str, kernel: str, constexprs: dict[str, Any], num_warps: int,
                  num_stages: int, pointer_dtype: str, pointer_dtypes: dict[str, str],
                  capability: int) -> Resources:
    import triton
    from triton.backends.compiler import GPUTarget

    spec = importlib.util.spec_from_file_location("padre_aot_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, kernel)
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg in SCALARS or arg.startswith("s_"):
            signature[arg] = "i32"
        else:
            signature[arg] = "*" + pointer_dtypes.get(arg, pointer_dtype)
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    t0 = time.perf_counter()
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    seconds = time.perf_counter() - t0
    usage = _resource_usage(compiled.asm["cubin"], kernel)
    ptx = compiled.asm["ptx"]
    mma = next((op for op in ("wgmma", "mma.sync") if re.search(rf"\b{re.escape(op)}\b", ptx)),
               "none")
    return Resources(kernel, dict(constexprs, num_warps=num_warps, num_stages=num_stages),
                     seconds, ptx.count("\n"), usage["REG"], usage["STACK"], usage["SHARED"],
                     mma)


def _resource_usage(cubin: bytes, kernel: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([str(cuobjdump()), "--dump-resource-usage", str(path)],
                             capture_output=True, text=True, check=True).stdout
    block = out[out.index(f"Function {kernel}"):]
    return {key: int(re.search(rf"\b{key}:(\d+)", block).group(1))
            for key in ("REG", "STACK", "SHARED")}


if __name__ == "__main__":  # the child process of compile_kernel: JSON request in, JSON out
    print(json.dumps(asdict(_compile_here(**json.loads(sys.stdin.read())))))
