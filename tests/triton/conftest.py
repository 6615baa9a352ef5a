"""The Triton tests run the generated kernels on the CPU in Triton's interpreter.

TRITON_INTERPRET must be set before any @triton.jit decorator runs, i.e. before a generated
module is imported: it is set here, when pytest collects this folder, before any test runs.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"
