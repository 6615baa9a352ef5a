#!/usr/bin/env bash
# Every check that needs a GPU, in one call of at most 580 s (the defaults' limits: 20 + 90 +
# 290 + 150 + 30, under the device tool's 600 s a command) on a lent H100/H200:
#
#   bash benchmarks/device_check.sh          # writes $OUT (or benchmarks/results/device/)
#
# 1. correctness, concurrently (nothing is timed yet; limit CHECK_LIMIT seconds, 90):
#    - the CUDA tests: compiled modules forward/backward (padre3's deterministic backward,
#      SimA's and Castling-ViT's bf16 attention kernels against float64, Castling-ViT's
#      bf16 gradient rule where a state rounded to bf16 fails it), CAOTE's Triton
#      score kernels inside eviction and split over the tokens at B = 1 (16k tokens, 32
#      heads) against the PyTorch twin, CAOTE's Hugging Face eviction on CUDA against CPU;
#    - padre fuzz --backend triton --device cuda on each spec with fused kernels, drawn
#      from fp32, fp16 and bf16 (FUZZ_EXAMPLES examples each, 6: at 4 the draws of four specs
#      held no fp16 one), and with --grad (the backward kernels) on padre3, hyena and sima, under PADRE_TRITON_TUNE=0: each shape runs the default tiles (and the
#      forced forms' own) instead of compiling and timing every candidate, so a failure
#      shrinks within the limit (the tiles a first launch picks are checked by the CUDA tests
#      and by gpu.py at every shape it times). A failing example is printed as it is found,
#      before shrinking, and the regression tests written are appended to device_log.txt;
# 2. benchmarks/gpu.py alone on the GPU, logging straight to device_log.txt (correctness gate,
#    then timings, each timed Triton form's output and gradients checked, 30% of the budget
#    kept for the other models; --budget GPU_BUDGET seconds, 230, stopped 60 s past it;
#    GPU_ARGS adds arguments, e.g. "--dims 384"; it saves its results after every row and
#    exits 1 where a check failed);
# 3. benchmarks/gpu_profile.py: host overhead, kernel-by-kernel device time and the Toeplitz
#    tile sweep: tiles x pipelines x L1 strips x band from the taps x slab, each tile's
#    output checked against the default tiles' (limit PROFILE_LIMIT seconds, 150; it saves
#    each row as it ends);
# 4. benchmarks/caote_split.py: the CAOTE score kernels at B = 1 decode shapes, the tokens
#    split over programs against one chunk a row and against the PyTorch twin (limit
#    CAOTE_LIMIT seconds, 30; it rewrites its table after every shape).
# Each records the source digest (benchmarks/revisions.py), which names the commit without
# a .git.
# It needs only what the GPU machines' image has (torch, triton, sympy, networkx, hypothesis,
# rich, pytest, transformers): the package runs from this checkout through PYTHONPATH. Every
# step runs whatever the others did; device_log.txt says which passed. $OUT holds seven files
# (the device tool returns at most eight): device_log.txt, gpu_padre3.{json,md,png},
# gpu_profile.{json,md} and caote_split.md.
set -u -o pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/device}"
mkdir -p "$out"
export OUT="$out" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
log="$out/device_log.txt"
steps=$(mktemp -d)  # one log per concurrent step, appended to $log in order
regressions=$(mktemp -d)
trap 'rm -rf "$steps" "$regressions"' EXIT

step() {  # step NAME SECONDS LOG COMMAND...: run with a time limit, appending to LOG
    local name=$1 limit=$2 dest=$3
    shift 3
    {
        echo "== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
        timeout "$limit" "$@" 2>&1
        echo "== $name: exit $?"
    } >>"$dest"
}

: >"$log"
timeout 20 "$python" -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', \
torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$log"
names=(cuda_tests)
step cuda_tests "${CHECK_LIMIT:-90}" "$steps/cuda_tests.log" \
    "$python" -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_api.py tests/caote/test_kernel.py tests/caote/test_hf.py tests/verify/test_fuzz.py &
fuzz=(env PADRE_TRITON_TUNE=0 "$python" -m padre_compiler.cli fuzz)  # default tiles only
for spec in padre3 conv2former hyena mamba_lti sima castling_vit; do
    names+=("fuzz_$spec")
    step "fuzz_$spec" "${CHECK_LIMIT:-90}" "$steps/fuzz_$spec.log" \
        "${fuzz[@]}" "$spec" --backend triton --device cuda \
        --examples "${FUZZ_EXAMPLES:-6}" --regressions "$regressions/$spec" &
done
for spec in padre3 hyena sima; do
    names+=("fuzz_grad_$spec")
    step "fuzz_grad_$spec" "${CHECK_LIMIT:-90}" "$steps/fuzz_grad_$spec.log" \
        "${fuzz[@]}" "$spec" --backend triton --device cuda --grad \
        --examples "${FUZZ_EXAMPLES:-6}" --regressions "$regressions/grad_$spec" &
done
wait
for name in "${names[@]}"; do cat "$steps/$name.log" >>"$log"; done
# the trap removes $regressions: the tests a failing fuzz step wrote go into the log
find "$regressions" -type f -name '*.py' | sort | while read -r test; do
    echo "== regression test ${test#"$regressions"/}:"
    cat "$test"
done >>"$log"
names+=(gpu_benchmark gpu_profile caote_split)
# shellcheck disable=SC2086  # GPU_ARGS is a list of arguments
step gpu_benchmark $(( ${GPU_BUDGET:-230} + 60 )) "$log" "$python" benchmarks/gpu.py \
    --budget "${GPU_BUDGET:-230}" ${GPU_ARGS:-}
step gpu_profile "${PROFILE_LIMIT:-150}" "$log" "$python" benchmarks/gpu_profile.py
step caote_split "${CAOTE_LIMIT:-30}" "$log" "$python" benchmarks/caote_split.py
failed=$(grep -h "^== .*: exit [1-9]" "$log" | sed 's/^== \(.*\): exit.*/\1/' | tr '\n' ' ')
echo "== ${#names[@]} steps; failed: ${failed:-none}" | tee -a "$log"
grep -h -E "^(gate|C=|sima|castling_vit|== )|passed|failed|error" "$log" | tail -60
[ -z "$failed" ]
