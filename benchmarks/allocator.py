"""glibc malloc settings for the CPU benchmarks.

With glibc's defaults, freed multi-megabyte temporaries go back to the kernel (munmap, or a
trim of the heap top) and the next forward faults them in again, page by page: thousands of
minor faults per call, ~30% of a padre3 forward at 196 x 16 tokens, landing on whichever module
happens to free at the wrong moment. Raising the trim and mmap thresholds (mallopt) keeps freed
memory in the process, the way a caching allocator would; benchmarks report both settings.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

ENV = "PADRE_BENCH_MALLOPT"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def apply_from_env() -> bool:
    """In a child started by `rerun_tuned`: raise both thresholds to 1 GiB; True if it did."""
    if os.environ.get(ENV) != "1":
        return False
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    return True


def rerun_tuned(script: str, args: list[str]) -> str:
    """Run `script args` in a child process with the thresholds raised; its stdout."""
    env = dict(os.environ, **{ENV: "1"})
    return subprocess.run([sys.executable, script, *args], env=env, capture_output=True,
                          text=True, check=True).stdout
