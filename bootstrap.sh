#!/usr/bin/env bash
# Set up padre-compiler in ./.venv and run the main job.
#
# Creates the virtual environment (reusing a torch that the base Python already has, e.g. a CUDA
# build on a GPU machine; otherwise installing the CPU build torch==2.13.0, since an unpinned torch
# pulls gigabytes of CUDA wheels), installs the package with its dev, triton and caote extras
# (Triton runs the generated kernels on the CPU through its interpreter in the tests; caote brings
# transformers for the KV-cache eviction tests) and onnx (padre export and its check in
# onnxruntime), then compiles
# specs/padre3.toml to a PyTorch module, runs it on a random batch and prints a summary.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x .venv/bin/python ]; then
    if "$PY" -c "import torch" 2>/dev/null; then
        "$PY" -m venv --system-site-packages .venv
    else
        "$PY" -m venv .venv
    fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[dev,triton,caote,onnx]"

.venv/bin/padre compile specs/padre3.toml --dim 384 --grid 14x14 -o build/padre3.py --run
