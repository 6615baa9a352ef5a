#!/usr/bin/env bash
# Every check that needs a GPU, in one call of about 9 minutes on a lent H100/H200:
#
#   bash benchmarks/device_check.sh          # writes $OUT (or benchmarks/results/device/)
#
# 1. benchmarks/gpu.py (correctness gate, then timings; --budget GPU_BUDGET seconds, 300);
# 2. the CUDA tests: compiled modules forward/backward, CAOTE's Triton score kernel inside
#    eviction, CAOTE's Hugging Face eviction on CUDA against CPU;
# 3. padre fuzz --backend triton --device cuda on each spec with fused kernels (FUZZ_EXAMPLES
#    examples each, 4; at most 30 s a spec).
# It needs only what the GPU machines' image has (torch, triton, sympy, networkx, hypothesis,
# rich, pytest, transformers): the package runs from this checkout through PYTHONPATH. Every
# step runs whatever the one before did; the log says which passed (device_log.txt).
set -u -o pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/device}"
mkdir -p "$out"
export OUT="$out" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
log="$out/device_log.txt"
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc" | tee -a "$log"
    [ "$rc" -eq 0 ] || status=1
}

: >"$log"
"$python" -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', \
torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$log"
step gpu_benchmark $(( ${GPU_BUDGET:-300} + 60 )) "$python" benchmarks/gpu.py \
    --budget "${GPU_BUDGET:-300}"
step cuda_tests 150 "$python" -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_api.py tests/caote/test_kernel.py tests/caote/test_hf.py
for spec in padre3 conv2former hyena sima castling_vit; do
    step "fuzz_$spec" 30 "$python" -m padre_compiler.cli fuzz "$spec" --backend triton \
        --device cuda --examples "${FUZZ_EXAMPLES:-4}" --regressions "$out/regressions"
done
echo "== all steps $([ $status -eq 0 ] && echo passed || echo 'did not all pass')" | tee -a "$log"
exit $status
