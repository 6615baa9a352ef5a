"""GPU benchmark (bf16): compiled padre3 on Triton vs hand-written PyTorch vs attention.

    python benchmarks/gpu.py                 # on an H100/H200; writes $OUT or benchmarks/results/
    python benchmarks/gpu.py --smoke         # CPU dry run of the plumbing (tiny sizes, no CUDA;
                                             # writes $OUT or a temporary folder)

Needs only torch and triton (and optionally matplotlib for the plot): it loads the committed,
standalone codegen/triton/padre3.py, not the compiler. Steps, under a global time budget
(--budget seconds, default 400; rows that do not fit are reported as skipped), of which
steps 1-4 leave MODELS_SHARE (30%) to the other models (step 5):

1. peaks: bf16 matmul rate (8192^3 GEMM) and copy bandwidth (1 GiB), measured here;
2. correctness gate: compiled (both conv forms, and the Toeplitz form forced onto its slab
   variant) vs the hand-written module on the same weights,
   fp32 and bf16, forward and input/weight gradients, at small sizes, untuned
   (PADRE_TRITON_TUNE=0: each form's default tiles); a failure is printed and
   recorded, and the timings of that form are flagged;
3. timings, medians of CUDA-event timings, per (C, N, batch), the target shapes first, and in
   each row in this order (a budget that runs out drops the last): triton (tensor-core
   Toeplitz form, the default for bf16), triton (direct CUDA-core form), qkv + SDPA + proj
   attention on SDPA's flash and cuDNN backends (each where it runs; the faster is the
   baseline, and the JSON's attention_from names it), hand-written eager in both conv layouts
   (channels-last views and contiguous NCHW copies: the ratios take the faster,
   "eager_best"); forward and forward+backward; the first forward call at each shape
   (compiles, first-launch tuning) is timed on its own. torch.compile of the hand-written
   module (forward, at COMPILED_SHAPES only) is timed once every target row is: its
   compiles (~30 s each, counted against the budget) come out of what the non-target rows
   would have, never out of a target row's;
4. the 3C-wide fused conv alone, both forms, on the input the module's dense_for_conv gives
   it in that form (Toeplitz: channel-major, the dense bias folded into the conv; direct:
   token-major, the bias added by F.linear) (ms and useful TFLOP/s: where the time goes),
   and its backward (dx, dw, db); the Toeplitz tiles each shape's first launch picked
   (toeplitz.fastest) are recorded in the JSON's meta;
5. SimA and Castling-ViT, on the linear-attention kernels (head_state / head_apply; Castling-ViT's
   q and k row normalisations inside them), Conv2Former (its gated 11x11 conv, the conv's
   input from a channel-major GEMM of its own) and Hyena (its long convolution's products,
   padding, layout changes and skip term in the kernels around torch's FFTs), against the
   PyTorch backend's module and attention, forward and forward+backward, C = 384; every
   model's first shape first, then every model's second, ...;
6. ratios (attention / x, eager / x) and the fraction of the floor reached (and of the floor
   of any structure: bytes only x, the output and the weights). Floor of padre3 =
   max(bytes / bandwidth, FLOPs / matmul rate), where FLOPs are the GEMMs plus the 11x11 taps
   counted as tensor-core work (the lowest floor) and bytes are the tensors crossing kernel
   boundaries in the compiled structure (25 C elements per token, bf16); attention's floor is
   its GEMMs plus 4 N^2 C per sequence at the matmul rate. Forward+backward floors are 3x the
   forward floor (FLOPs and bytes alike; approximate).

Checks beside the timings, at every timed shape (the gate's sizes do not reach the kernels,
strip alignment and tiles, that the larger shapes compile and their first launches pick):
each Triton form's output against the hand-written module's on the same input
(`err_vs_eager`), and after its timed training step, one backward of each on the same input
and output gradient, x's gradient and every parameter's compared (`grad_err_vs_eager`, the
hand-written module's named as the spec's by spec_tensors); each model's output and gradients
against the PyTorch backend's module's (`max_rel_err_vs_torch`, `grad_err_vs_torch`). An
error of BF16_TOL or more is listed in the row's `failed_check` and marked FAILED in the
tables, and the script then exits 1 (after writing everything).

The JSON and markdown are rewritten after every padre3 row (the plot too) and every model
shape, so a run stopped by a time limit keeps what it measured. They record the source
digest of padre_compiler/, codegen/ and benchmarks/ (benchmarks/revisions.py, which also
finds the commits that match it) and, where there is a .git, the git revision.

Results: gpu_padre3.{json,md} (+ .png) with device name and versions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.handwritten import Attention, HandwrittenPadre3  # noqa: E402
from benchmarks.revisions import revision_line, revision_meta  # noqa: E402

GRIDS = {196: (14, 14), 784: (28, 28), 3136: (56, 56), 12544: (112, 112),
         25600: (160, 160), 102400: (320, 320)}
BATCH = {196: 128, 784: 32, 3136: 8, 12544: 2, 25600: 1, 102400: 1}  # >= 25k tokens a call
DIMS = (384, 768)
KERNEL = 11
TARGETS = {(384, 3136): 2.0, (384, 25600): 10.0, (384, 102400): 30.0}  # x attention, forward
BYTES_PER_TOKEN_C = 25  # elements per token per channel crossing kernel boundaries (see doc)


def timing_order(dims, tokens) -> list[tuple[int, int, int]]:
    """(C, N, batch) of every dim and token count, the target shapes first: the budget (with
    first-launch tuning at every shape) may run out before the last rows."""
    return sorted(((c, n, BATCH[n]) for c in dims for n in tokens),
                  key=lambda shape: (shape[:2] not in TARGETS, shape))


class Budget:
    """Seconds left of a run's time budget, counted from `t0` (default: now)."""

    def __init__(self, seconds: float, t0: float | None = None) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def less(self, seconds: float) -> Budget:
        """The same budget ending `seconds` sooner: what is left once they are kept back."""
        return Budget(self.seconds - seconds, self.t0)


def load_generated(name: str, backend: str = "triton"):
    path = ROOT / "codegen" / backend / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"padre_gpu_{backend}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device: torch.device, target_ms: float = 25.0, samples: int = 15) -> float:
    """Median over `samples` of (time of `inner` back-to-back calls) / inner, in ms."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    once = (time.perf_counter() - t0) * 1e3
    inner = max(1, min(200, int(target_ms / max(once, 1e-3))))
    samples = samples if once * inner * samples < 4000 else max(3, int(4000 / (once * inner)))
    times = []
    for _ in range(samples):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) * 1e3 / inner)
    return statistics.median(times)


def graph_ms(fn, device: torch.device) -> float | None:
    """Median time of fn replayed from a CUDA graph: device time alone, without the host's
    Python, dispatch and launch overhead (None on the CPU). fn must have run once (tuning)."""
    if device.type != "cuda":
        return None
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return median_ms(graph.replay, device)


def peaks(device: torch.device, smoke: bool) -> dict[str, float]:
    """Measured bf16 matmul FLOP/s and copy bandwidth (bytes/s)."""
    n = 1024 if smoke else 8192
    dt = torch.float32 if smoke else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dt)
    mm = median_ms(lambda: a @ a, device, samples=5)
    big = torch.empty((2**24 if smoke else 2**29), device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(big)
    cp = median_ms(lambda: dst.copy_(big), device, samples=5)
    return {"matmul_flops": 2 * n**3 / (mm * 1e-3), "bandwidth": 2 * big.numel() * 2 / (cp * 1e-3)}


def padre3_floor_ms(c: int, tokens: int, rates: dict[str, float],
                    structure: bool = True) -> float:
    """max(FLOPs / matmul rate, bytes / bandwidth): bytes the tensors crossing the compiled
    structure's kernel boundaries (BYTES_PER_TOKEN_C), or with structure=False only x, the
    output and the weights (the computation's own floor, whatever the kernels)."""
    gemm = 2 * tokens * c * c * 6  # 3C-wide dense, two mix denses, projection
    taps = 2 * tokens * c * KERNEL * KERNEL * 5  # five C-wide depthwise 11x11 maps
    weights = 6 * c * c + 5 * c * KERNEL * KERNEL + 10 * c  # denses, taps, biases and scales
    elements = BYTES_PER_TOKEN_C * tokens * c if structure else 2 * tokens * c + weights
    return 1e3 * max((gemm + taps) / rates["matmul_flops"], 2 * elements / rates["bandwidth"])


def attention_floor_ms(c: int, n: int, batch: int, rates: dict[str, float]) -> float:
    flops = 2 * batch * n * c * c * 4 + 4 * batch * n * n * c
    return 1e3 * flops / rates["matmul_flops"]


def build(mod, c: int, n: int, device, dtype):
    torch.manual_seed(0)
    hand = HandwrittenPadre3(c, GRIDS[n], KERNEL).to(device).off_init_()
    fused = mod.Padre3(c, GRIDS[n]).to(device)
    fused.load_state_dict(hand.to_spec_state_dict())
    return hand.to(dtype), fused.to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """os.environ with `values` set inside the block, and as it was after."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


FORMS = ["toeplitz", "direct"]  # conv forms to gate and time (--forms)
# gated as well, not timed as a row: the Toeplitz form with its strips from one slab, whole
# and in two column parts, which the Toeplitz form's first launches may pick
# (toeplitz.TOEPLITZ_SLAB_VARIANTS)
GATED_ONLY = ["slab", "slab2"]
# relative (max |error| / max |reference|), a bf16 module against the hand-written one (fp32
# weights rounded): the gate's bf16 bound, and every timed row's forward and gradients'
BF16_TOL = 4e-2
# attention's SDPA on each of these backends where it runs; its faster is the baseline
ATTENTION_BACKENDS = {"attention_flash": SDPBackend.FLASH_ATTENTION,
                      "attention_cudnn": SDPBackend.CUDNN_ATTENTION}
# also timed from a CUDA graph
GRAPHED = ("triton", "triton_direct", *ATTENTION_BACKENDS)
TIMINGS = ("ms", "ms_graph", "ms_train")  # a row's timing fields, {label: ms} each
LABEL_LEAST_S = 20  # seconds left for a label of a row to be timed
COMPILE_LEAST_S = 60  # for torch.compile of the hand-written module (~30 s to compile)
COMPILED_SHAPES = ((384, 3136), (384, 25600))  # (C, N) where it is timed (after the targets)


class OnBackend(nn.Module):
    """`module` with its scaled_dot_product_attention calls on one SDPA backend (raises where
    that backend cannot run them)."""

    def __init__(self, module: nn.Module, backend: SDPBackend) -> None:
        super().__init__()
        self.module, self.backend = module, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(self.backend):
            return self.module(x)


def take_fastest(row: dict, labels: tuple[str, ...], name: str) -> None:
    """row[field][name]: the fastest of `labels` in each timing field (TIMINGS) where any
    was timed, and row[name + "_from"][field]: which label it was."""
    for field in TIMINGS:
        timed = [(row[field][label], label) for label in labels if row[field].get(label)]
        if timed:
            row[field][name], row.setdefault(f"{name}_from", {})[field] = min(timed)


def check(row: dict, what: str, err: float, model: str = "padre3") -> None:
    """Record `what` in row["failed_check"] (and say so) where err is not below BF16_TOL."""
    if not err < BF16_TOL:
        row.setdefault("failed_check", []).append(what)
        print(f"  {model} {what} off the reference by {err:.1e} at C={row['C']} N={row['N']}",
              flush=True)


def param_grads(module: nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: p.grad for name, p in module.named_parameters()}


def gradients(module: nn.Module, x: torch.Tensor, g: torch.Tensor,
              named: Callable[[nn.Module], dict[str, torch.Tensor | None]] = param_grads
              ) -> dict[str, torch.Tensor | None]:
    """The gradients of <module(x), g>: x's ("x") and the parameters' under `named`'s names.
    The module's gradients are set to None before and after, so they are this backward's
    alone and no later backward adds to the tensors returned."""
    module.zero_grad(set_to_none=True)
    xg = x.detach().requires_grad_()
    module(xg).backward(g)
    grads = {"x": xg.grad, **named(module)}
    module.zero_grad(set_to_none=True)
    return grads


def grad_errors(got: dict[str, torch.Tensor | None],
                want: dict[str, torch.Tensor | None]) -> dict[str, float]:
    """rel of each gradient of `got` against `want`'s of the same name; inf where either side
    has none."""
    return {name: rel(got[name], want[name])
            if got.get(name) is not None and want.get(name) is not None else float("inf")
            for name in sorted(got.keys() | want.keys())}


def gate(mod, device, smoke: bool) -> dict[str, dict]:
    """Compiled vs hand-written on the same weights: fp32 and bf16, forward and gradients.
    Untuned (PADRE_TRITON_TUNE=0): each form runs its own default tiles, compiled once, since
    a first launch's timing at the gate's small shapes would compile every candidate for
    tiles no timed shape reuses (the tiles a timed shape picks are checked in its row)."""
    results: dict[str, dict] = {}
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dims = (32,) if smoke else DIMS
    for form in FORMS + GATED_ONLY:
        checks = {}
        try:
            cases = [(dims[0], 196, 2, torch.bfloat16, BF16_TOL),
                     (dims[-1], 784, 1, torch.bfloat16, BF16_TOL)]
            if form == "direct":  # fp32 end to end: exact up to rounding (toeplitz: tf32 dots)
                cases.append((dims[0], 196, 2, torch.float32, 1e-4))
            for c, n, batch, dtype, tol in cases:
                hand, fused = build(mod, c, n, device, torch.float32)
                fused = fused.to(dtype)
                x = torch.randn(batch, n, c, device=device)
                g = torch.randn(batch, n, c, device=device)
                xr = x.clone().requires_grad_()
                xf = x.to(dtype).requires_grad_()
                with environ(PADRE_TRITON_CONV=form, PADRE_TRITON_TUNE="0"):
                    yr, yf = hand(xr), fused(xf)
                    yr.backward(g)
                    yf.backward(g.to(dtype))
                key = f"C={c} N={n} {str(dtype).split('.')[-1]}"
                errs = {"out": rel(yf, yr), "dx": rel(xf.grad, xr.grad),
                        "d_mix1_dw": rel(fused.mix1_token_weight.grad,
                                         hand.mix_dw[0].weight.grad[:, 0]),
                        "d_proj": rel(fused.proj_weight.grad, hand.proj.weight.grad)}
                checks[key] = {"errors": errs, "tol": tol,
                               "ok": all(v < tol for v in errs.values())}
        except Exception as err:  # recorded, the benchmark goes on
            checks["error"] = {"ok": False, "errors": repr(err)[:400]}
            traceback.print_exc()
        ok = all(v["ok"] for v in checks.values())
        results[form] = {"ok": ok, "checks": checks}
        worst = max((max(v["errors"].values()) for v in checks.values()
                     if isinstance(v["errors"], dict)), default=float("nan"))
        print(f"gate {form:9s}: {'PASS' if ok else 'FAIL'} (worst rel. error {worst:.1e})",
              flush=True)
    torch.backends.cudnn.allow_tf32 = True
    return results


def time_row(mod, c: int, n: int, batch: int, device, rates, budget: Budget,
             smoke: bool) -> dict:
    """One (C, N, batch) row: every label timed, in the order of `candidates` (what matters
    most first: a budget that runs out drops the last), each Triton form's output and
    gradients checked against the hand-written module's."""
    dtype = torch.float32 if smoke else torch.bfloat16
    row: dict = {"C": c, "N": n, "batch": batch, "tokens": n * batch,
                 **{field: {} for field in TIMINGS}}
    hand, fused = build(mod, c, n, device, dtype)
    hand_nchw = HandwrittenPadre3(c, GRIDS[n], KERNEL, conv_layout="nchw").to(device, dtype)
    hand_nchw.load_state_dict(hand.state_dict())
    attn = Attention(c, max(1, c // 64)).to(device, dtype)
    x = torch.randn(batch, n, c, device=device, dtype=dtype)
    g = torch.randn_like(x)
    xg = x.clone().requires_grad_()
    candidates = {  # label -> (conv form, module)
        **{label: (form, fused) for label, form in (("triton", "toeplitz"),
                                                    ("triton_direct", "direct"))
           if form in FORMS},
        **{label: (None, OnBackend(attn, backend))
           for label, backend in ATTENTION_BACKENDS.items()},
        "eager": (None, hand),
        "eager_nchw": (None, hand_nchw),
    }
    # the hand-written module's gradients, made at the first Triton form's check
    reference: dict[str, torch.Tensor | None] = {}
    for label, (form, module) in candidates.items():
        if budget.left() < LABEL_LEAST_S:
            row["ms"][label] = None
            row.setdefault("skipped", []).append(label)
            continue
        try:
            if form:
                os.environ["PADRE_TRITON_CONV"] = form
            with torch.no_grad():
                t0 = time.perf_counter()  # the first call: compiles and first launches
                out = module(x)
                sync(device)
                row.setdefault("first_call_s", {})[label] = time.perf_counter() - t0
                if module is fused:  # the shape's own kernels against the hand-written module
                    err = rel(out, hand(x))
                    row.setdefault("err_vs_eager", {})[label] = err
                    check(row, label, err)
                del out
                row["ms"][label] = median_ms(lambda m=module: m(x), device)
            if label in GRAPHED:
                try:
                    with torch.no_grad():
                        row["ms_graph"][label] = graph_ms(lambda m=module: m(x), device)
                except Exception as err:  # recorded; the label's other timings go on
                    row.setdefault("errors", {})[f"{label} (CUDA graph)"] = repr(err)[:300]
            def step(m=module):
                xg.grad = None
                m(xg).backward(g)

            row["ms_train"][label] = median_ms(step, device)
            if device.type == "cuda":  # what a step holds beyond the weights and x
                sync(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                step()
                sync(device)
                row.setdefault("train_peak_mib", {})[label] = (
                    torch.cuda.max_memory_allocated(device) - before) / 2**20
            if module is fused:  # the timed step's gradients against the hand-written one's
                if not reference:
                    reference.update(gradients(hand, x, g, lambda m: m.spec_tensors(
                        lambda p: p.grad)))
                errs = grad_errors(gradients(fused, x, g), reference)
                row.setdefault("grad_err_vs_eager", {})[label] = errs
                check(row, f"{label} gradients", max(errs.values()))
        except Exception as err:  # one failure must not lose the other labels
            row["ms"].setdefault(label, None)
            failures = "attention_unavailable" if label in ATTENTION_BACKENDS else "errors"
            row.setdefault(failures, {})[label] = repr(err)[:300]
            print(f"  {label} failed at C={c} N={n}: {err!r}"[:300], flush=True)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    reference.clear()
    if budget.left() > 30:  # the 3C-wide fused conv alone, per form: where the time goes
        try:
            w3 = torch.randn(3 * c, KERNEL, KERNEL, device=device, dtype=dtype)
            b3 = torch.randn(3 * c, device=device, dtype=dtype)
            dense3 = torch.randn(3 * c, c, device=device, dtype=dtype) / c**0.5
            dense_b3 = torch.randn(3 * c, device=device, dtype=dtype)
            dz3 = torch.randn(batch, n, 3 * c, device=device, dtype=dtype)
            h, w = GRIDS[n]
            for form in FORMS:
                os.environ["PADRE_TRITON_CONV"] = form
                # the conv's input as the module's dense_for_conv gives it in this form:
                # channel-major with the bias left to the conv (in_bias) in the Toeplitz form,
                # token-major with the bias added (no in_bias) in the direct form
                with torch.no_grad():
                    x3, bi3 = mod.dense_for_conv(x, dense3, dense_b3, h, KERNEL, KERNEL,
                                                 fold_bias=True)
                t = median_ms(lambda x3=x3, bi3=bi3: mod.dwconv_hadamard(
                    x3, w3, b3, None, None, None, None, h, w, KERNEL // 2, KERNEL // 2, True,
                    False, in_bias=bi3), device)
                row[f"conv3c_ms_{form}"] = t
                row[f"conv3c_useful_tflops_{form}"] = (
                    2 * n * batch * 3 * c * KERNEL * KERNEL / (t * 1e-3) / 1e12)
                # its backward (dz given): dx, dw, db; twice the taps' multiply-adds
                row[f"conv3c_bwd_ms_{form}"] = median_ms(
                    lambda x3=x3, bi3=bi3: mod._dwconv_hadamard_bwd_impl(
                        x3, w3, b3, None, None, None, None, dz3, None, h, w, KERNEL // 2,
                        KERNEL // 2, in_bias=bi3), device)
                del x3, bi3
        except Exception as err:  # recorded, the row goes on
            row.setdefault("errors", {})["conv3c"] = repr(err)[:300]
    os.environ.pop("PADRE_TRITON_CONV", None)
    ratios(row, rates)
    return row


def time_compiled_hand(row: dict, mod, device, rates, budget: Budget) -> None:
    """torch.compile of the hand-written module at a timed row's shape, forward only (a second,
    backward compile would not fit the budget): its first call (the compile) and its median,
    into the row, whose ratios are then made again. Called once every target row is timed:
    at COMPILE_LEAST_S left, a compile in the first target row's timings had left the later
    target rows too little (a row's labels skipped, or the whole row)."""
    c, n, batch = row["C"], row["N"], row["batch"]
    if budget.left() < COMPILE_LEAST_S:
        row["ms"]["compiled_hand"] = None
        row.setdefault("skipped", []).append("compiled_hand")
        return
    try:
        hand, _ = build(mod, c, n, device, torch.bfloat16)
        x = torch.randn(batch, n, c, device=device, dtype=torch.bfloat16)
        compiled = torch.compile(hand, dynamic=False)  # a static graph at each shape
        with torch.no_grad():
            t0 = time.perf_counter()
            compiled(x)
            sync(device)
            row.setdefault("first_call_s", {})["compiled_hand"] = time.perf_counter() - t0
            row["ms"]["compiled_hand"] = median_ms(lambda: compiled(x), device)
    except Exception as err:  # recorded, the row's other timings stand
        row["ms"]["compiled_hand"] = None
        row.setdefault("errors", {})["compiled_hand"] = repr(err)[:300]
        print(f"  compiled_hand failed at C={c} N={n}: {err!r}"[:300], flush=True)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ratios(row, rates)


def ratios(row: dict, rates: dict[str, float]) -> None:
    """A timed row's fastest attention and eager layout, floors, fractions of the floor and
    speed-ups, from its timings so far (made again where a timing is added)."""
    c, n, batch = row["C"], row["N"], row["batch"]
    take_fastest(row, ("eager", "eager_nchw"), "eager_best")  # the faster layout
    take_fastest(row, tuple(ATTENTION_BACKENDS), "attention")
    if set(ATTENTION_BACKENDS) <= set(row.get("attention_unavailable", ())):
        row.setdefault("errors", {})["attention"] = "no SDPA backend ran it"
    ms, tr = row["ms"], row["ms_train"]
    floor = padre3_floor_ms(c, n * batch, rates)
    row["floor_ms"] = floor
    row["floor_any_structure_ms"] = padre3_floor_ms(c, n * batch, rates, structure=False)
    row["attention_floor_ms"] = attention_floor_ms(c, n, batch, rates)
    for label in ("triton", "triton_direct", "eager_best", "compiled_hand", "attention"):
        t = ms.get(label)
        if t:
            f = row["attention_floor_ms"] if label == "attention" else floor
            row[f"floor_fraction_{label}"] = f / t
            if label != "attention":
                row[f"floor_any_structure_fraction_{label}"] = row["floor_any_structure_ms"] / t
            if ms.get("attention"):
                row[f"x_attention_{label}"] = ms["attention"] / t
            if ms.get("eager_best"):
                row[f"x_eager_{label}"] = ms["eager_best"] / t
        tg, ag = row["ms_graph"].get(label), row["ms_graph"].get("attention")
        if tg and label != "attention":
            row[f"floor_fraction_graph_{label}"] = floor / tg
            if ag:
                row[f"x_attention_graph_{label}"] = ag / tg
        tt = tr.get(label)
        if tt and tr.get("attention"):
            row[f"x_attention_train_{label}"] = tr["attention"] / tt
        if tt and label != "attention":
            row[f"floor_fraction_train_{label}"] = 3 * floor / tt


def fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def per_label(rows: list[dict], field: str, labels: tuple[str, ...], spec: str) -> list[str]:
    """Table lines '| C | N | batch | r[field][label] for each label |', one per row."""
    return [f"| {r['C']} | {r['N']} | {r['batch']} | "
            + " | ".join(fmt(r.get(field, {}).get(label), spec) for label in labels) + " |"
            for r in rows]


ATTENTION_SHAPES = [(384, 3136, 8), (384, 25600, 1), (384, 102400, 1)]
# a model defined for fewer tokens: its longest sequence, with a batch of ~25k tokens a call
MODEL_SHAPES = {"hyena": [(384, 1024, 24)]}
# the other models: spec -> (class, what they are, their kernels), in the order they are timed
MODELS = {
    "sima": ("Sima", "SimA (l1-normalised Q (K^T V), its normalisations on the state)",
             "the head_state / head_apply kernels"),
    "castling_vit": ("CastlingVit", "Castling-ViT (row-normalised Q and K inside the kernels, "
                                    "its output's row normalisation in head_apply's epilogue)",
                     "the head_state / head_apply kernels"),
    "conv2former": ("Conv2former", "Conv2Former (dwconv11(x W1) * (x W2), the conv's input "
                                   "channel-major from a GEMM of its own)",
                    "the fused conv kernels"),
    "hyena": ("Hyena", "Hyena, order 2 (three causal 3-tap convs, then gates around one causal "
                       "long convolution of 1,024 taps, as FFTs of size 2N; defined for "
                       "N <= 1,024, timed there)",
              "the fused short convs and the long-convolution kernels around torch.fft"),
}
# the share of --budget kept for the model rows: padre3's rows stop where no more is left
MODELS_SHARE = 0.3
MODEL_LEAST_S = 30  # seconds left for a model's shape to be timed


def model_order(smoke: bool) -> list[tuple[str, int, int, int]]:
    """(model, C, N, batch) of every model row, each model's first shape first, then each
    one's second, ...: a budget that runs out drops the last shapes, not the last models."""
    shapes = {name: [(64, 64, 2)] if smoke else MODEL_SHAPES.get(name, ATTENTION_SHAPES)
              for name in MODELS}
    return sorted(((name, *shape) for name in MODELS for shape in shapes[name]),
                  key=lambda r: (shapes[r[0]].index(r[1:]), list(MODELS).index(r[0])))


@functools.cache  # once per model: its shapes share the modules (and their tuned tiles)
def model_modules(name: str) -> tuple[object, object]:
    """The generated Triton and PyTorch modules of one of MODELS."""
    return load_generated(name), load_generated(name, "torch")


def model_row(name: str, c: int, n: int, batch: int, device, smoke: bool) -> dict:
    """One of MODELS at one shape: the Triton module, attention (heads of 64; the faster SDPA
    backend) and the PyTorch backend's module, timed in that order, forward and
    forward+backward, bf16 (fp32 in --smoke); the Triton module's output and, after its timed
    step, its gradients checked against the PyTorch backend's (BF16_TOL). A grid model takes
    the square grid of the shape's tokens."""
    tri, ref = model_modules(name)
    cls = MODELS[name][0]
    dtype = torch.float32 if smoke else torch.bfloat16
    torch.manual_seed(0)
    side = int(n ** 0.5)
    grid = ((side, side),) if "grid" in inspect.signature(getattr(tri, cls)).parameters else ()
    fast = getattr(tri, cls)(c, *grid).to(device=device, dtype=dtype)
    slow = getattr(ref, cls)(c, *grid).to(device=device, dtype=dtype)
    slow.load_state_dict(fast.state_dict())
    attn = Attention(c, num_heads=c // 64).to(device=device, dtype=dtype)
    x = torch.randn(batch, n, c, device=device, dtype=dtype)
    g = torch.randn_like(x)
    with torch.no_grad():
        out_err = rel(fast(x), slow(x))
    row: dict = {"C": c, "N": n, "batch": batch, "max_rel_err_vs_torch": out_err,
                 **{field: {} for field in TIMINGS}}
    check(row, "triton", out_err, name)
    xg = x.detach().requires_grad_()
    mods = {"triton": fast, **{label: OnBackend(attn, backend)
                               for label, backend in ATTENTION_BACKENDS.items()},
            "torch": slow}
    for label, module in mods.items():
        try:
            with torch.no_grad():
                row["ms"][label] = median_ms(lambda m=module: m(x), device)
            row["ms_train"][label] = median_ms(lambda m=module: m(xg).sum().backward(), device)
        except Exception as err:  # recorded, the other labels go on
            failures = "attention_unavailable" if label in ATTENTION_BACKENDS else "errors"
            row.setdefault(failures, {})[label] = repr(err)[:300]
    take_fastest(row, tuple(ATTENTION_BACKENDS), "attention")
    try:  # the timed step's gradients against the PyTorch backend's
        errs = grad_errors(gradients(fast, x, g), gradients(slow, x, g))
        row["grad_err_vs_torch"] = errs
        check(row, "triton gradients", max(errs.values()), name)
    except Exception as err:  # recorded, the timings stand
        row.setdefault("errors", {})["gradients"] = repr(err)[:300]
    ms = row["ms"]
    print(f"{name} C={c} N={n} B={batch}: triton {fmt(ms.get('triton'))} ms, torch "
          f"{fmt(ms.get('torch'))}, attention {_attention(row, 'ms')} (err {out_err:.1e})",
          flush=True)
    return row


def _ratio(a: float | None, b: float | None) -> str:
    return fmt(a / b, ".2f") if a and b else "-"


def _tiles(cfg: dict) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in cfg.items())


def _launch_shape(key: list[str]) -> tuple[str, str, str]:
    """(kernel, x shape, x strides) of a toeplitz.fastest key (both kinds: (..., x.shape,
    x.stride(), ...), the weight gradient's led by "wgrad")."""
    return ("weight gradient" if key[0] == "wgrad" else "forward"), key[4], key[5]


# what a row records of its checks that failed, labels that failed or were skipped
PROBLEMS = ("failed_check", "errors", "skipped", "attention_unavailable")


def every_row(meta: dict, rows: list[dict]) -> list[tuple[str, dict]]:
    """(model, row) of padre3's rows and every model's (meta[model])."""
    return [("padre3", r) for r in rows] + [(name, r) for name in MODELS
                                            for r in meta.get(name) or []]


def _attention(r: dict, field: str) -> str:
    """r[field]["attention"] and the SDPA backend that ran it fastest."""
    won = r.get("attention_from", {}).get(field)
    backend = f" ({won.removeprefix('attention_')})" if won else ""
    return fmt(r.get(field, {}).get("attention")) + backend


def _checked(err: float | dict | None, r: dict, what: str) -> str:
    """A check's error (the worst of a dict of them), FAILED where `what` failed it."""
    worst = max(err.values(), default=None) if isinstance(err, dict) else err
    return fmt(worst, ".1e") + (" FAILED" if what in r.get("failed_check", ()) else "")


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# padre3 on {meta['device']} (bf16, {KERNEL}x{KERNEL} depthwise, degree 3)", "",
             f"Command: `{meta.get('command', 'python benchmarks/gpu.py')}`", "",
             revision_line(meta), "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}; "
             f"measured peaks: {meta['peaks']['matmul_flops'] / 1e12:.0f} TFLOP/s bf16 matmul, "
             f"{meta['peaks']['bandwidth'] / 1e9:.0f} GB/s copy. Gate: "
             + ", ".join(f"{k} {'PASS' if v['ok'] else 'FAIL'}" for k, v in meta["gate"].items()),
             "", "Forward, ms (median of CUDA-event timings), speed-up vs attention (SDPA on its "
             "faster backend, named) and vs eager, fraction of the floor; the output's relative "
             f"error against the hand-written module's (FAILED: {BF16_TOL:g} or more):", "",
             "| C | N | batch | triton | triton direct | eager (best layout) | compile(hand) "
             "| attention | x attn | x eager | floor ms | floor frac | floor frac (any "
             "structure) | target | err vs eager |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r.get("ms", {})
        target = TARGETS.get((r["C"], r["N"]))
        got = r.get("x_attention_triton")
        verdict = "-" if target is None else (f">= {target:g}x: "
                                              + ("met" if got and got >= target else "not met"))
        lines.append(
            f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(ms.get('triton'))} "
            f"| {fmt(ms.get('triton_direct'))} | {fmt(ms.get('eager_best'))} "
            f"| {fmt(ms.get('compiled_hand'))} | {_attention(r, 'ms')} "
            f"| {fmt(r.get('x_attention_triton'), '.2f')} | {fmt(r.get('x_eager_triton'), '.2f')} "
            f"| {fmt(r.get('floor_ms'), '.4f')} | {fmt(r.get('floor_fraction_triton'), '.2f')} "
            f"| {fmt(r.get('floor_any_structure_fraction_triton'), '.2f')} | {verdict} "
            f"| {_checked(r.get('err_vs_eager', {}).get('triton'), r, 'triton')} |")
    lines += ["", "Forward, device time alone: the same calls replayed from a CUDA graph (no "
              "Python, dispatch or launch overhead), ms, and the ratios on those times:", "",
              "| C | N | batch | triton | triton direct | attention | x attn | floor frac |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gr = r.get("ms_graph", {})
        lines.append(
            f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(gr.get('triton'))} "
            f"| {fmt(gr.get('triton_direct'))} | {_attention(r, 'ms_graph')} "
            f"| {fmt(r.get('x_attention_graph_triton'), '.2f')} "
            f"| {fmt(r.get('floor_fraction_graph_triton'), '.2f')} |")
    lines += ["", "Forward + backward, ms, and speed-up vs attention's forward + backward; the "
              "gradients' (x's and every parameter's) worst relative error against the "
              "hand-written module's, per Triton form:", "",
              "| C | N | batch | triton | triton direct | eager | compile(hand) | attention "
              "| x attn | floor frac (approx.) | grad err | grad err (direct) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tr, grads = r.get("ms_train", {}), r.get("grad_err_vs_eager", {})
        lines.append(
            f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(tr.get('triton'))} "
            f"| {fmt(tr.get('triton_direct'))} | {fmt(tr.get('eager_best'))} "
            f"| {fmt(tr.get('compiled_hand'))} | {_attention(r, 'ms_train')} "
            f"| {fmt(r.get('x_attention_train_triton'), '.2f')} "
            f"| {fmt(r.get('floor_fraction_train_triton'), '.2f')} "
            f"| {_checked(grads.get('triton'), r, 'triton gradients')} "
            f"| {_checked(grads.get('triton_direct'), r, 'triton_direct gradients')} |")
    lines += ["", "Peak memory of one forward + backward step beyond what was allocated before it "
              "(weights, x, x's gradient buffer), MiB:", "",
              "| C | N | batch | triton | triton direct | eager | attention (flash) "
              "| attention (cudnn) |", "|---|---|---|---|---|---|---|---|"]
    lines += per_label(rows, "train_peak_mib",
                       ("triton", "triton_direct", "eager", *ATTENTION_BACKENDS), ".0f")
    lines += ["", "The first forward call at each shape, s: compiles (Triton: every first-launch "
              "candidate, together on a thread pool; torch.compile: its graph) and the first "
              "launches' timing of the candidates; a later row reuses the kernels of the same "
              "specialisation:", "", "| C | N | batch | triton | triton direct | compile(hand) |",
              "|---|---|---|---|---|---|"]
    lines += per_label(rows, "first_call_s", ("triton", "triton_direct", "compiled_hand"), ".1f")
    lines += ["", "The 3C-wide 11x11 depthwise conv alone (first fused kernel of padre3, "
              "channel-major input): ms and useful TFLOP/s (2 x 121 multiply-adds per output), "
              "and its backward (dz given: dx, dw, db), ms, per form:", "",
              "| C | N | batch | toeplitz ms | TFLOP/s | bwd ms | direct ms | TFLOP/s | bwd ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(r.get('conv3c_ms_toeplitz'))} "
            f"| {fmt(r.get('conv3c_useful_tflops_toeplitz'), '.1f')} "
            f"| {fmt(r.get('conv3c_bwd_ms_toeplitz'))} "
            f"| {fmt(r.get('conv3c_ms_direct'))} "
            f"| {fmt(r.get('conv3c_useful_tflops_direct'), '.1f')} "
            f"| {fmt(r.get('conv3c_bwd_ms_direct'))} |")
    for name, (_, title, kernels) in MODELS.items():
        if not meta.get(name):
            continue
        lines += ["", f"{title}, on {kernels}, vs the PyTorch backend's module vs attention, "
                  "ms (forward; forward + backward):",
                  "", "| C | N | batch | triton | torch | attention | x attn | x torch | "
                  "train: triton | torch | attention | rel. err vs torch | grad err vs torch |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in meta[name]:
            ms, tr = r.get("ms", {}), r.get("ms_train", {})
            lines.append(
                f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(ms.get('triton'))} "
                f"| {fmt(ms.get('torch'))} | {_attention(r, 'ms')} "
                f"| {_ratio(ms.get('attention'), ms.get('triton'))} "
                f"| {_ratio(ms.get('torch'), ms.get('triton'))} | {fmt(tr.get('triton'))} "
                f"| {fmt(tr.get('torch'))} | {_attention(r, 'ms_train')} "
                f"| {_checked(r.get('max_rel_err_vs_torch'), r, 'triton')} "
                f"| {_checked(r.get('grad_err_vs_torch'), r, 'triton gradients')} |")
    if meta.get("toeplitz_tiles"):  # recorded after every row
        lines += ["", "Tiles the first launch of each tensor-core shape picked (toeplitz.fastest: "
                  "alternatives, strips through L1, pipeline depth):", "",
                  "| kernel | x shape | strides | tiles |", "|---|---|---|---|"]
        for tuned in meta["toeplitz_tiles"]:
            kernel, shape, strides = _launch_shape(tuned["key"])
            lines.append(f"| {kernel} | {shape} | {strides} | {_tiles(tuned['tiles'])} |")
    if meta.get("candidate_ms"):
        lines += ["", "Every candidate the first launch of a shape timed (toeplitz.TIMES; "
                  "triton.testing.do_bench medians) and its speed relative to the first timed, "
                  "the default tiles (> 1: faster):",
                  "", "| kernel | x shape | tiles | ms | speed vs default |",
                  "|---|---|---|---|---|"]
        for timed in meta["candidate_ms"]:
            kernel, shape, _ = _launch_shape(timed["key"])
            default = timed["times"][0][1]
            for cfg, ms in timed["times"]:
                lines.append(f"| {kernel} | {shape} | {_tiles(cfg)} | {ms:.4f} "
                             f"| {_ratio(default, ms)} |")
    if meta.get("same_code"):
        lines += ["", "Candidates not timed: the installed Triton compiled them to the same "
                  "machine code as an earlier candidate (toeplitz.SAME_CODE):", "",
                  "| kernel | x shape | tiles | same code as |", "|---|---|---|---|"]
        for same in meta["same_code"]:
            kernel, shape, _ = _launch_shape(same["key"])
            lines.append(f"| {kernel} | {shape} | {_tiles(same['tiles'])} "
                         f"| {_tiles(same['same_as'])} |")
    problems = [(name, r) for name, r in every_row(meta, rows)
                if any(r.get(k) for k in PROBLEMS)]
    if problems:
        lines += ["", "Failed checks, failures and skips (attention_unavailable: an SDPA "
                  "backend that did not run):", ""]
        lines += [f"- {name} C={r['C']} N={r['N']}: "
                  + "; ".join(f"{k} {r[k]}" for k in PROBLEMS if r.get(k))
                  for name, r in problems]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, len(DIMS), figsize=(6 * len(DIMS), 4), squeeze=False)
    for ax, c in zip(axes[0], DIMS, strict=True):
        sel = [r for r in rows if r["C"] == c]
        for label in ("triton", "triton_direct", "eager_best", "compiled_hand"):
            pts = [(r["N"], r[f"x_attention_{label}"]) for r in sel
                   if r.get(f"x_attention_{label}")]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="tokens N", ylabel="x attention (forward)",
               title=f"C = {c}")
        if ax.get_legend_handles_labels()[0]:  # a labelled line (not only the 1x line)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)  # redrawn after every row


def tuning(mod) -> dict[str, list]:
    """What the first launches of padre3's kernels picked and timed so far (toeplitz.TUNED,
    TIMES and SAME_CODE), as JSON."""
    def key_of(key: tuple) -> list[str]:
        return [str(part) for part in key]

    return {
        "toeplitz_tiles": [{"key": key_of(key), "tiles": cfg}
                           for key, cfg in getattr(mod, "TUNED", {}).items()],
        "candidate_ms": [{"key": key_of(key), "times": [[cfg, ms] for cfg, ms in times]}
                         for key, times in getattr(mod, "TIMES", {}).items()],
        "same_code": [{"key": key_of(key), "tiles": cfg, "same_as": other}
                      for key, pairs in getattr(mod, "SAME_CODE", {}).items()
                      for cfg, other in pairs],
    }


def failed(meta: dict, rows: list[dict]) -> bool:
    """Whether the gate or a check of any row (padre3's or a model's) failed."""
    return (not all(v["ok"] for v in meta["gate"].values())
            or any(r.get("failed_check") for _, r in every_row(meta, rows)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=400.0, help="seconds for the whole run")
    ap.add_argument("--smoke", action="store_true", help="CPU dry run at tiny sizes")
    ap.add_argument("--forms", nargs="+", default=FORMS, choices=["toeplitz", "direct"],
                    help="conv forms to gate and time")
    ap.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    ap.add_argument("--tokens", type=int, nargs="+", default=list(GRIDS), choices=list(GRIDS))
    args = ap.parse_args()
    FORMS[:] = args.forms
    budget = Budget(args.budget)
    models_reserve = MODELS_SHARE * args.budget
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: run with --smoke for a CPU dry run")
        return 2
    torch.backends.cudnn.benchmark = True
    # a smoke run never overwrites the committed GPU results
    out = Path(os.environ.get("OUT") or (tempfile.mkdtemp(prefix="padre_gpu_smoke_") if args.smoke
                                         else ROOT / "benchmarks" / "results"))
    out.mkdir(parents=True, exist_ok=True)
    mod = load_generated("padre3")
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.node(),
            "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda,
            "python": platform.python_version(), "smoke": args.smoke,
            "command": " ".join(["python benchmarks/gpu.py", *sys.argv[1:]]),
            **revision_meta(ROOT)}
    print(f"{meta['device']}: torch {meta['torch']}, triton {triton_version}; source digest "
          f"{meta['source_digest']}, git {meta['git_revision']}", flush=True)
    meta["peaks"] = peaks(device, args.smoke)
    print(f"peaks: {meta['peaks']['matmul_flops'] / 1e12:.1f} TFLOP/s matmul, "
          f"{meta['peaks']['bandwidth'] / 1e9:.0f} GB/s copy", flush=True)
    meta["gate"] = gate(mod, device, args.smoke)
    shapes = [(32, 196, 2)] if args.smoke else timing_order(args.dims, args.tokens)
    rows: list[dict] = []  # in timing order; reported in (C, N) order

    def save(with_plot: bool = False) -> None:
        """Everything so far, after each row: a time limit or a crash may end the run."""
        meta.update(tuning(mod), seconds=args.budget - budget.left())
        ordered = sorted(rows, key=lambda r: (r["C"], r["N"]))
        (out / "gpu_padre3.json").write_text(json.dumps({"meta": meta, "rows": ordered},
                                                        indent=1))
        (out / "gpu_padre3.md").write_text(markdown(meta, ordered))
        if with_plot:
            plot(ordered, out / "gpu_padre3.png")

    padre3_budget = budget.less(models_reserve)  # the models' share kept back

    def report(row: dict) -> None:
        ms = row.get("ms", {})
        print(f"C={row['C']:4d} N={row['N']:6d} B={row['batch']:3d}: triton "
              f"{fmt(ms.get('triton'))} ms, direct {fmt(ms.get('triton_direct'))}, eager "
              f"{fmt(ms.get('eager_best'))}, compile {fmt(ms.get('compiled_hand'))}, attention "
              f"{_attention(row, 'ms')}; x attn {fmt(row.get('x_attention_triton'), '.2f')}, "
              f"x eager {fmt(row.get('x_eager_triton'), '.2f')}, "
              f"floor frac {fmt(row.get('floor_fraction_triton'), '.2f')} "
              f"[{budget.left():.0f} s left]", flush=True)

    def padre3_row(c: int, n: int, batch: int) -> None:
        if padre3_budget.left() < 25:
            rows.append({"C": c, "N": n, "batch": batch, "skipped": ["all (time budget)"]})
            save()
            return
        try:
            row = time_row(mod, c, n, batch, device, meta["peaks"], padre3_budget, args.smoke)
        except Exception as err:  # the row is recorded as failed
            traceback.print_exc()
            row = {"C": c, "N": n, "batch": batch, "errors": {"row": repr(err)[:300]}}
        rows.append(row)
        report(row)
        save(with_plot=True)

    targets = [shape for shape in shapes if shape[:2] in TARGETS]
    for shape in targets:
        padre3_row(*shape)
    # torch.compile's baseline once every target row is timed (never in --smoke)
    for row in [] if args.smoke else [r for r in rows if "ms" in r]:
        if (row["C"], row["N"]) in COMPILED_SHAPES:
            time_compiled_hand(row, mod, device, meta["peaks"], padre3_budget)
            report(row)
            save(with_plot=True)
    for shape in shapes:
        if shape not in targets:
            padre3_row(*shape)
    meta.update({name: [] for name in MODELS})
    for name, c, n, batch in model_order(args.smoke):  # the whole budget, models' share left
        if budget.left() < MODEL_LEAST_S:
            row = {"C": c, "N": n, "batch": batch, "skipped": ["all (time budget)"]}
        else:
            try:
                row = model_row(name, c, n, batch, device, args.smoke)
            except Exception as err:  # recorded, the other rows stand
                traceback.print_exc()
                row = {"C": c, "N": n, "batch": batch, "errors": {name: repr(err)[:300]}}
        meta[name].append(row)
        save()
    save(with_plot=True)
    print((out / "gpu_padre3.md").read_text())
    print(f"wrote {out}/gpu_padre3.{{json,md,png}} in {meta['seconds']:.0f} s")
    if failed(meta, rows):
        print("FAILED: the gate or a row's check (see failed_check)", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
