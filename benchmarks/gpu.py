"""GPU benchmark (bf16): compiled padre3 on Triton vs hand-written PyTorch vs attention.

    python benchmarks/gpu.py                 # on an H100/H200; writes $OUT or benchmarks/results/
    python benchmarks/gpu.py --smoke         # CPU dry run of the plumbing (tiny sizes, no CUDA;
                                             # writes $OUT or a temporary folder)

Needs only torch and triton (and optionally matplotlib for the plot): it loads the committed,
standalone codegen/triton/padre3.py, not the compiler. Steps, under a global time budget
(--budget seconds, default 400; rows that do not fit are reported as skipped):

1. peaks: bf16 matmul rate (8192^3 GEMM) and copy bandwidth (1 GiB), measured here;
2. correctness gate: compiled (both conv forms, and the Toeplitz form forced onto its slab
   variant) vs the hand-written module on the same weights,
   fp32 and bf16, forward and input/weight gradients, at small sizes; a failure is printed and
   recorded, and the timings of that form are flagged;
3. timings, medians of CUDA-event timings, per (C, N, batch), the target shapes first: triton
   (tensor-core Toeplitz form, the default for bf16), triton (direct CUDA-core form),
   hand-written eager in both conv layouts (channels-last views and contiguous NCHW copies:
   the ratios take the faster, "eager_best"), torch.compile of the hand-written module
   (forward, C = 384, N in
   {3136, 25600} only: its compile time counts against the budget), and qkv + SDPA + proj
   attention; forward and forward+backward; the first forward call at each shape (compiles,
   first-launch tuning) is timed on its own;
4. the 3C-wide fused conv alone, both forms, on a channel-major input with the input bias
   folded in, as the module feeds it
   (ms and useful TFLOP/s: where the time goes), and its backward (dx, dw, db); the Toeplitz
   tiles each shape's first launch picked (kernels.fastest) are recorded in the JSON's meta;
5. SimA and Castling-ViT, on the linear-attention kernels (head_state / head_apply; Castling-ViT's
   q and k row normalisations inside them), Conv2Former (its gated 11x11 conv, the conv's
   input from a channel-major GEMM of its own) and Hyena (its long convolution's products,
   padding, layout changes and skip term in the kernels around torch's FFTs), against the
   PyTorch backend's module and attention, forward and forward+backward, C = 384;
6. ratios (attention / x, eager / x) and the fraction of the floor reached (and of the floor
   of any structure: bytes only x, the output and the weights). Floor of padre3 =
   max(bytes / bandwidth, FLOPs / matmul rate), where FLOPs are the GEMMs plus the 11x11 taps
   counted as tensor-core work (the lowest floor) and bytes are the tensors crossing kernel
   boundaries in the compiled structure (25 C elements per token, bf16); attention's floor is
   its GEMMs plus 4 N^2 C per sequence at the matmul rate. Forward+backward floors are 3x the
   forward floor (FLOPs and bytes alike; approximate). Every timed Triton row's output is also
   compared with the hand-written module's on the same input (`err_vs_eager`, flagged where
   it passes the gate's bf16 tolerance): the gate's sizes do not reach the kernels (strip
   alignment, tiles) that the larger shapes compile.

Results: gpu_padre3.{json,md} (+ .png) with device name and versions.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.handwritten import Attention, HandwrittenPadre3  # noqa: E402

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
    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


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


GRAPHED = ("triton", "triton_direct", "attention")  # also timed from a CUDA graph
FORMS = ["toeplitz", "direct"]  # conv forms to gate and time (--forms)
# gated as well, not timed as a row: the Toeplitz form with its strips from one slab, whole
# and in two column parts, which the Toeplitz form's first launches may pick
# (kernels.TOEPLITZ_SLAB_VARIANTS)
GATED_ONLY = ["slab", "slab2"]
BF16_TOL = 4e-2  # relative, bf16 module against the hand-written one (fp32 weights rounded)


def gate(mod, device, smoke: bool) -> dict[str, dict]:
    """Compiled vs hand-written on the same weights: fp32 and bf16, forward and gradients."""
    results: dict[str, dict] = {}
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dims = (32,) if smoke else DIMS
    for form in FORMS + GATED_ONLY:
        os.environ["PADRE_TRITON_CONV"] = form  # popped when the gate ends
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
    os.environ.pop("PADRE_TRITON_CONV", None)
    return results


def time_row(mod, c: int, n: int, batch: int, device, rates, budget: Budget,
             smoke: bool) -> dict:
    dtype = torch.float32 if smoke else torch.bfloat16
    row: dict = {"C": c, "N": n, "batch": batch, "tokens": n * batch, "ms": {}, "ms_train": {},
                 "ms_graph": {}}
    hand, fused = build(mod, c, n, device, dtype)
    hand_nchw = HandwrittenPadre3(c, GRIDS[n], KERNEL, conv_layout="nchw").to(device, dtype)
    hand_nchw.load_state_dict(hand.state_dict())
    attn = Attention(c, max(1, c // 64)).to(device, dtype)
    x = torch.randn(batch, n, c, device=device, dtype=dtype)
    g = torch.randn_like(x)
    xg = x.clone().requires_grad_()
    candidates = {
        "triton": ("toeplitz", fused),
        "triton_direct": ("direct", fused),
        "eager": (None, hand),
        "eager_nchw": (None, hand_nchw),
        "attention": (None, attn),
    }
    for label, (form, _) in list(candidates.items()):
        if form and form not in FORMS:
            del candidates[label]
    if c == 384 and n in (3136, 25600) and not smoke and budget.left() > 150:
        candidates["compiled_hand"] = (None, torch.compile(hand))  # ~30 s compile, forward only
    for label, (form, module) in candidates.items():
        if budget.left() < 20:
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
                    if not err < BF16_TOL:
                        row.setdefault("failed_check", []).append(label)
                        print(f"  {label} off the hand-written module by {err:.1e} at C={c} "
                              f"N={n}", flush=True)
                del out
                row["ms"][label] = median_ms(lambda m=module: m(x), device)
                if label in GRAPHED:
                    row["ms_graph"][label] = graph_ms(lambda m=module: m(x), device)
            if label == "compiled_hand":
                continue  # a second (backward) compile would not fit the budget

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
        except Exception as err:  # one failure must not lose the other rows
            row["ms"].setdefault(label, None)
            row.setdefault("errors", {})[label] = repr(err)[:300]
            print(f"  {label} failed at C={c} N={n}: {err!r}"[:300], flush=True)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if budget.left() > 30:  # the 3C-wide fused conv alone, per form: where the time goes
        try:
            # channel-major, as dense_for_conv stores the module's conv inputs
            x3 = torch.randn(batch, 3 * c, n, device=device, dtype=dtype).mT
            w3 = torch.randn(3 * c, KERNEL, KERNEL, device=device, dtype=dtype)
            b3 = torch.randn(3 * c, device=device, dtype=dtype)
            bi3 = torch.randn(3 * c, device=device, dtype=dtype)  # dense_for_conv's, folded
            dz3 = torch.randn(batch, n, 3 * c, device=device, dtype=dtype)
            h, w = GRIDS[n]
            for form in FORMS:
                os.environ["PADRE_TRITON_CONV"] = form
                t = median_ms(lambda: mod.dwconv_hadamard(
                    x3, w3, b3, None, None, None, None, h, w, KERNEL // 2, KERNEL // 2, True,
                    False, in_bias=bi3), device)
                row[f"conv3c_ms_{form}"] = t
                row[f"conv3c_useful_tflops_{form}"] = (
                    2 * n * batch * 3 * c * KERNEL * KERNEL / (t * 1e-3) / 1e12)
                # its backward (dz given): dx, dw, db; twice the taps' multiply-adds
                row[f"conv3c_bwd_ms_{form}"] = median_ms(lambda: mod._dwconv_hadamard_bwd_impl(
                    x3, w3, b3, None, None, None, None, dz3, None, h, w, KERNEL // 2,
                    KERNEL // 2, in_bias=bi3), device)
        except Exception as err:  # recorded, the row goes on
            row.setdefault("errors", {})["conv3c"] = repr(err)[:300]
    os.environ.pop("PADRE_TRITON_CONV", None)
    ms, tr = row["ms"], row["ms_train"]
    for times in (ms, tr):  # the hand-written module in its faster layout
        fastest = min((t for t in (times.get("eager"), times.get("eager_nchw")) if t),
                      default=None)
        if fastest:
            times["eager_best"] = fastest
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
    return row


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


def model_rows(name: str, device, budget: Budget, smoke: bool) -> list[dict]:
    """One of MODELS: the Triton module vs the PyTorch backend's module vs attention (heads
    of 64), forward and forward+backward, bf16 (fp32 in --smoke); outputs compared before
    timing. A grid model takes the square grid of the shape's tokens."""
    tri, ref = load_generated(name), load_generated(name, "torch")
    cls = MODELS[name][0]
    dtype = torch.float32 if smoke else torch.bfloat16
    rows = []
    for c, n, batch in ([(64, 64, 2)] if smoke else MODEL_SHAPES.get(name, ATTENTION_SHAPES)):
        if budget.left() < 30:
            rows.append({"C": c, "N": n, "batch": batch, "skipped": ["all (time budget)"]})
            continue
        torch.manual_seed(0)
        side = int(n ** 0.5)
        grid = ((side, side),) if "grid" in inspect.signature(getattr(tri, cls)).parameters \
            else ()
        fast = getattr(tri, cls)(c, *grid).to(device=device, dtype=dtype)
        slow = getattr(ref, cls)(c, *grid).to(device=device, dtype=dtype)
        slow.load_state_dict(fast.state_dict())
        attn = Attention(c, num_heads=c // 64).to(device=device, dtype=dtype)
        x = torch.randn(batch, n, c, device=device, dtype=dtype)
        with torch.no_grad():
            err = rel(fast(x), slow(x))
        mods = {"triton": fast, "torch": slow, "attention": attn}
        with torch.no_grad():
            ms = {k: median_ms(lambda m=m, x=x: m(x), device) for k, m in mods.items()}
        xg = x.detach().requires_grad_()
        train = {k: median_ms(lambda m=m, xg=xg: m(xg).sum().backward(), device)
                 for k, m in mods.items()}
        rows.append({"C": c, "N": n, "batch": batch, "max_rel_err_vs_torch": err, "ms": ms,
                     "ms_train": train})
        print(f"{name} C={c} N={n} B={batch}: triton {fmt(ms['triton'])} ms, torch "
              f"{fmt(ms['torch'])}, attention {fmt(ms['attention'])} (err {err:.1e})",
              flush=True)
    return rows


def _ratio(a: float | None, b: float | None) -> str:
    return fmt(a / b, ".2f") if a and b else "-"


def _tiles(cfg: dict) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in cfg.items())


def _launch_shape(key: list[str]) -> tuple[str, str, str]:
    """(kernel, x shape, x strides) of a kernels.fastest key (both kinds: (..., x.shape,
    x.stride(), ...), the weight gradient's led by "wgrad")."""
    return ("weight gradient" if key[0] == "wgrad" else "forward"), key[4], key[5]


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# padre3 on {meta['device']} (bf16, {KERNEL}x{KERNEL} depthwise, degree 3)", "",
             f"Command: `{meta.get('command', 'python benchmarks/gpu.py')}`", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}; "
             f"measured peaks: {meta['peaks']['matmul_flops'] / 1e12:.0f} TFLOP/s bf16 matmul, "
             f"{meta['peaks']['bandwidth'] / 1e9:.0f} GB/s copy. Gate: "
             + ", ".join(f"{k} {'PASS' if v['ok'] else 'FAIL'}" for k, v in meta["gate"].items()),
             "", "Forward, ms (median of CUDA-event timings), speed-up vs attention and vs eager, "
             "fraction of the floor:", "",
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
            f"| {fmt(ms.get('compiled_hand'))} | {fmt(ms.get('attention'))} "
            f"| {fmt(r.get('x_attention_triton'), '.2f')} | {fmt(r.get('x_eager_triton'), '.2f')} "
            f"| {fmt(r.get('floor_ms'), '.4f')} | {fmt(r.get('floor_fraction_triton'), '.2f')} "
            f"| {fmt(r.get('floor_any_structure_fraction_triton'), '.2f')} | {verdict} "
            f"| {fmt(r.get('err_vs_eager', {}).get('triton'), '.1e')}"
            f"{' FAILED' if 'triton' in r.get('failed_check', []) else ''} |")
    lines += ["", "Forward, device time alone: the same calls replayed from a CUDA graph (no "
              "Python, dispatch or launch overhead), ms, and the ratios on those times:", "",
              "| C | N | batch | triton | triton direct | attention | x attn | floor frac |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gr = r.get("ms_graph", {})
        lines.append(
            f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(gr.get('triton'))} "
            f"| {fmt(gr.get('triton_direct'))} | {fmt(gr.get('attention'))} "
            f"| {fmt(r.get('x_attention_graph_triton'), '.2f')} "
            f"| {fmt(r.get('floor_fraction_graph_triton'), '.2f')} |")
    lines += ["", "Forward + backward, ms, and speed-up vs attention's forward + backward:", "",
              "| C | N | batch | triton | triton direct | eager | compile(hand) | attention "
              "| x attn | floor frac (approx.) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tr = r.get("ms_train", {})
        lines.append(
            f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(tr.get('triton'))} "
            f"| {fmt(tr.get('triton_direct'))} | {fmt(tr.get('eager_best'))} "
            f"| {fmt(tr.get('compiled_hand'))} | {fmt(tr.get('attention'))} "
            f"| {fmt(r.get('x_attention_train_triton'), '.2f')} "
            f"| {fmt(r.get('floor_fraction_train_triton'), '.2f')} |")
    lines += ["", "Peak memory of one forward + backward step beyond what was allocated before it "
              "(weights, x, x's gradient buffer), MiB:", "",
              "| C | N | batch | triton | triton direct | eager | attention |",
              "|---|---|---|---|---|---|---|"]
    lines += per_label(rows, "train_peak_mib", ("triton", "triton_direct", "eager", "attention"),
                       ".0f")
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
                  "train: triton | torch | attention | rel. err vs torch |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in meta[name]:
            ms, tr = r.get("ms", {}), r.get("ms_train", {})
            lines.append(
                f"| {r['C']} | {r['N']} | {r['batch']} | {fmt(ms.get('triton'))} "
                f"| {fmt(ms.get('torch'))} | {fmt(ms.get('attention'))} "
                f"| {_ratio(ms.get('attention'), ms.get('triton'))} "
                f"| {_ratio(ms.get('torch'), ms.get('triton'))} | {fmt(tr.get('triton'))} "
                f"| {fmt(tr.get('torch'))} | {fmt(tr.get('attention'))} "
                f"| {fmt(r.get('max_rel_err_vs_torch'), '.1e')} |")
    if meta.get("toeplitz_tiles"):  # recorded at the end of the run
        lines += ["", "Tiles the first launch of each tensor-core shape picked (kernels.fastest: "
                  "alternatives, strips through L1, pipeline depth):", "",
                  "| kernel | x shape | strides | tiles |", "|---|---|---|---|"]
        for tuned in meta["toeplitz_tiles"]:
            kernel, shape, strides = _launch_shape(tuned["key"])
            lines.append(f"| {kernel} | {shape} | {strides} | {_tiles(tuned['tiles'])} |")
    if meta.get("candidate_ms"):
        lines += ["", "Every candidate the first launch of a shape timed (kernels.TIMES; "
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
                  "machine code as an earlier candidate (kernels.SAME_CODE):", "",
                  "| kernel | x shape | tiles | same code as |", "|---|---|---|---|"]
        for same in meta["same_code"]:
            kernel, shape, _ = _launch_shape(same["key"])
            lines.append(f"| {kernel} | {shape} | {_tiles(same['tiles'])} "
                         f"| {_tiles(same['same_as'])} |")
    errors = [(r["C"], r["N"], r.get("errors"), r.get("skipped")) for r in rows
              if r.get("errors") or r.get("skipped")]
    if errors:
        lines += ["", "Failures and skips:", ""]
        lines += [f"- C={c} N={n}: errors {e}, skipped {s}" for c, n, e, s in errors]
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
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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
            "command": " ".join(["python benchmarks/gpu.py", *sys.argv[1:]])}
    print(f"{meta['device']}: torch {meta['torch']}, triton {triton_version}", flush=True)
    meta["peaks"] = peaks(device, args.smoke)
    print(f"peaks: {meta['peaks']['matmul_flops'] / 1e12:.1f} TFLOP/s matmul, "
          f"{meta['peaks']['bandwidth'] / 1e9:.0f} GB/s copy", flush=True)
    meta["gate"] = gate(mod, device, args.smoke)
    shapes = [(32, 196, 2)] if args.smoke else timing_order(args.dims, args.tokens)
    rows = []
    for c, n, batch in shapes:
        if budget.left() < 25:
            rows.append({"C": c, "N": n, "batch": batch, "skipped": ["all (time budget)"]})
            continue
        try:
            row = time_row(mod, c, n, batch, device, meta["peaks"], budget, args.smoke)
        except Exception as err:  # the row is recorded as failed
            traceback.print_exc()
            row = {"C": c, "N": n, "batch": batch, "errors": {"row": repr(err)[:300]}}
        rows.append(row)
        ms = row.get("ms", {})
        print(f"C={c:4d} N={n:6d} B={batch:3d}: triton {fmt(ms.get('triton'))} ms, "
              f"direct {fmt(ms.get('triton_direct'))}, eager {fmt(ms.get('eager_best'))}, "
              f"compile {fmt(ms.get('compiled_hand'))}, attention {fmt(ms.get('attention'))}; "
              f"x attn {fmt(row.get('x_attention_triton'), '.2f')}, "
              f"x eager {fmt(row.get('x_eager_triton'), '.2f')}, "
              f"floor frac {fmt(row.get('floor_fraction_triton'), '.2f')} "
              f"[{budget.left():.0f} s left]", flush=True)
        (out / "gpu_padre3.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    rows.sort(key=lambda r: (r["C"], r["N"]))  # reported in (C, N) order
    for name in MODELS:
        try:
            meta[name] = model_rows(name, device, budget, args.smoke)
        except Exception as err:  # recorded, the padre3 results stand
            traceback.print_exc()
            meta[name] = [{"C": 0, "N": 0, "batch": 0, "errors": {name: repr(err)[:300]}}]
    meta["toeplitz_tiles"] = [  # what the first launch of each shape picked (kernels.fastest)
        {"key": [str(part) for part in key], "tiles": cfg}
        for key, cfg in getattr(mod, "TUNED", {}).items()]
    meta["candidate_ms"] = [
        {"key": [str(part) for part in key], "times": [[cfg, ms] for cfg, ms in times]}
        for key, times in getattr(mod, "TIMES", {}).items()]
    meta["same_code"] = [
        {"key": [str(part) for part in key], "tiles": cfg, "same_as": other}
        for key, pairs in getattr(mod, "SAME_CODE", {}).items() for cfg, other in pairs]
    meta["seconds"] = args.budget - budget.left()
    (out / "gpu_padre3.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown(meta, rows)
    (out / "gpu_padre3.md").write_text(table)
    plot(rows, out / "gpu_padre3.png")
    print(table)
    print(f"wrote {out}/gpu_padre3.{{json,md,png}} in {meta['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
