"""What ptxas makes of the generated Triton kernels for an H100 (sm_90), measured on a CPU.

    .venv/bin/python benchmarks/triton_aot.py [--baseline-rev GIT_REV]
    # writes benchmarks/results/triton_aot.{md,json,png}

Compiles padre3's three kernels (direct forward, backward, tensor-core Toeplitz forward) at the
launch configurations their launchers pick for padre3 on a GPU (C = 384, 56 x 56 tokens, 11 x 11
taps, bf16, every fusion flag on) with a cold Triton cache, and reads registers, stack (spilled
registers) and shared memory from the cubin (padre_compiler/backends/triton/aot.py). With
--baseline-rev, the same for codegen/triton/padre3.py as committed at that git revision.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from padre_compiler.backends.triton import aot  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
FLAGS = dict(KH=11, KW=11, PH=5, PW=5, HAS_BIAS=True, HAS_GATE=True, HAS_ACC=True,
             HAS_ACC_SCALE=True, HAS_SCALE=True)
FP32_GRADS = {k: "fp32" for k in ("dw", "db", "ds", "dsa")}


def _launchers(path: Path):
    """The generated module, for its launch-configuration functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"aot_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(module, name: str, *args, **kw) -> dict:
    try:
        return getattr(module, name)(*args, **kw)
    except TypeError:  # an older launcher without the keyword
        kw.pop("backward", None)
        return getattr(module, name)(*args, **kw)


def measure(path: Path) -> list[dict]:
    m = _launchers(path)
    direct = _config(m, "dwconv_hadamard_config", 3136, 384, gpu=True)
    backward = _config(m, "dwconv_hadamard_config", 3136, 384, gpu=True, backward=True)
    toeplitz = _config(m, "dwconv_toeplitz_config", 384, 11, gpu=True, height=56)
    runs = [
        ("dwconv_hadamard_fwd_kernel", dict(FLAGS, STORE_Z=True, STORE_O=True), direct, 3, {}),
        ("dwconv_hadamard_bwd_kernel", dict(FLAGS, HAS_DZ=True, HAS_DO=True), backward, 3,
         FP32_GRADS),
        ("dwconv_toeplitz_fwd_kernel", dict(FLAGS, STORE_Z=True, STORE_O=True), toeplitz, 2,
         {}),
    ]
    rows = []
    for kernel, flags, cfg, stages, ptrs in runs:
        consts = dict(flags, **{k: v for k, v in cfg.items() if k != "num_warps"})
        r = aot.compile_kernel(path, kernel, consts, num_warps=cfg["num_warps"], num_stages=stages,
                               pointer_dtypes=ptrs)
        rows.append({"kernel": kernel, "tiles": {k: v for k, v in cfg.items()},
                     "seconds": r.seconds, "ptx_lines": r.ptx_lines, "registers": r.registers,
                     "stack": r.stack, "shared": r.shared, "mma": r.mma})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| kernel | tiles, warps | cold compile s | PTX lines | registers / thread | "
             "stack bytes / thread (spills) | shared bytes | tensor cores |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tiles = ", ".join(f"{k}={v}" for k, v in r["tiles"].items())
        lines.append(f"| {r['kernel']} | {tiles} | {r['seconds']:.1f} | {r['ptx_lines']} | "
                     f"{r['registers']} | {r['stack']} | {r['shared']} | {r['mma']} |")
    return lines


def plot(runs: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    kernels = [r["kernel"].replace("_kernel", "") for r in next(iter(runs.values()))]
    width = 0.8 / len(runs)
    for i, (label, rows) in enumerate(runs.items()):
        xs = [k + i * width for k in range(len(rows))]
        axes[0].bar(xs, [max(r["stack"], 0.5) for r in rows], width, label=label)
        axes[1].bar(xs, [r["seconds"] for r in rows], width, label=label)
    for ax, title in zip(axes, ("stack bytes / thread (spills; 0 drawn at 0.5)",
                                "cold compile, s"),
                         strict=True):
        ax.set_xticks([k + width * (len(runs) - 1) / 2 for k in range(len(kernels))])
        ax.set_xticklabels(kernels, rotation=15, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "triton_aot.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT / "codegen" / "triton" / "padre3.py")
    parser.add_argument("--baseline-rev", help="compare with padre3's codegen at this git rev")
    args = parser.parse_args()
    if not aot.available():
        sys.exit("Triton with its NVIDIA backend (cuobjdump) is needed: pip install '.[triton]'")
    runs, sources = {}, {"current": args.source.name}
    if args.baseline_rev:
        rel = "codegen/triton/padre3.py"
        text = subprocess.run(["git", "show", f"{args.baseline_rev}:{rel}"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"padre3_{args.baseline_rev}.py"
            path.write_text(text)
            runs["baseline"] = measure(path)
        sources["baseline"] = f"{rel} at {args.baseline_rev}"
    runs["current"] = measure(args.source)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "triton_aot.json").write_text(json.dumps(runs, indent=2))
    import triton

    lines = ["# Generated Triton kernels compiled for sm_90 on a CPU (no GPU)", "",
             "Command: `python benchmarks/triton_aot.py " + " ".join(sys.argv[1:]) + "`  ",
             f"Triton {triton.__version__}; padre3's launch configurations on a GPU (C = 384, "
             "56 x 56 tokens, 11 x 11 taps, bf16, every fusion flag on); cold Triton cache.", ""]
    for label, rows in runs.items():
        lines += [f"## {label}: `{sources[label]}`", "", *table(rows), ""]
    (OUT / "triton_aot.md").write_text("\n".join(lines))
    plot(runs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
