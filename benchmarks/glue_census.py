"""The torch work around a compiled Triton module's kernels: every torch op that moves data in a
forward and in a training step, with the bytes it reads and writes, at the benchmark's shape.

    .venv/bin/python benchmarks/glue_census.py [--baseline-rev GIT_REV ...]
        [--specs padre3 sima castling_vit]
    # writes benchmarks/results/glue_census.{md,json,png} (other specs: glue_census_<specs>.*)

On a GPU each of these ops is a kernel of its own beside the fused Triton kernels: the GEMMs
(cuBLAS), and the glue (concatenations, band operands, gradient sums and accumulations, layout
copies) whose time is bytes over bandwidth. This census needs no GPU: the generated module runs
on the CPU on the GPU's code path (TRITON_INTERPRET=1, PADRE_TRITON_CONV=toeplitz, the
linear attention's GPU token chunks; the conv tiles' band operand is the same on both) with its
Triton launches stubbed out (counted, not run), and a TorchDispatchMode records each aten op.
Views and allocations move nothing and are not listed. Bytes read: the tensor arguments an op
reads (a stride-0 dimension counted once; an argument it only writes, like copy_'s destination,
or whose data it ignores, like new_zeros's, not read); bytes written: its outputs. An
"activation pass" is a glue op (not a GEMM) touching an activation: a tensor with a dimension of
N tokens or of B * N (the shapes are chosen so that no other size equals these).
With --baseline-rev the same for the codegen committed at each revision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before the generated modules import triton
os.environ["PADRE_TRITON_CONV"] = "toeplitz"

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.host_overhead import load  # noqa: E402
from benchmarks.revisions import source_at  # noqa: E402
from benchmarks.shapes import tokens_for  # noqa: E402

OUT = Path(os.environ.get("OUT", ROOT / "benchmarks" / "results"))
DEFAULT_SPECS = ("padre3", "sima", "castling_vit")
GEMMS = {"aten.mm.default", "aten.bmm.default", "aten.addmm.default", "aten.baddbmm.default"}
READS_NOTHING = ("aten.new_", "aten.zeros_like", "aten.ones_like", "aten.full_like",
                 "aten.empty_like", "aten.zeros.", "aten.ones.", "aten.full.", "aten.arange.")
MOVES_NOTHING = {"aten.empty.memory_format", "aten.empty_strided.default",
                 "aten.new_empty.default", "aten.new_empty_strided.default",
                 "aten._unsafe_view.default"}


def touched_bytes(t: torch.Tensor) -> int:
    """Bytes of t's distinct elements (a stride-0 dimension, as of expand, counted once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        n *= size if stride else 1
    return n * t.element_size()


class Census(TorchDispatchMode):
    """Records (op, bytes read, bytes written, whether it touches an activation) of each aten
    op that moves data; `tokens`: the sizes that mark an activation (N and B * N)."""

    def __init__(self, tokens: tuple[int, ...]) -> None:
        super().__init__()
        self.tokens = tokens
        self.ops: list[tuple[str, int, int, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func)
        if func.is_view or name in MOVES_NOTHING:
            return out
        written = {a.name for a in func._schema.arguments if a.alias_info and a.alias_info.is_write}
        named = dict(zip((a.name for a in func._schema.arguments), args, strict=False)) | kwargs
        read = [] if name.startswith(READS_NOTHING) else [
            t for key, value in named.items()
            if not (key in written and name in ("aten.copy_.default", "aten.fill_.Scalar",
                                                "aten.zero_.default"))
            for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        activation = any(size in self.tokens for t in read + outs for size in t.shape)
        self.ops.append((name, sum(map(touched_bytes, read)), sum(map(touched_bytes, outs)),
                         activation))
        return out


class CountedLaunch:
    """Stands in for a Triton kernel: `kernel[grid](...)` counts a launch and runs nothing."""

    def __init__(self, name: str, launches: Counter) -> None:
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches[self.name] += 1
        return launch


def census(path: Path, label: str, dim: int, grid: tuple[int, int], batch: int,
           dtype: torch.dtype, tokens: int | None = None) -> dict[str, dict]:
    """{mode: summary} of the module at `path`: forward under no_grad, forward + backward;
    a sequence module on `tokens` (default: the grid's)."""
    launches: Counter = Counter()
    cls = load(path, label, lambda name: CountedLaunch(name, launches))
    runtime = cls.forward.__globals__  # the generated module's namespace
    if "head_config" in runtime:  # the GPU's token chunks: they size the partial states
        cpu_config = runtime["head_config"]
        runtime["head_config"] = lambda n, e, gpu, *args, **kw: cpu_config(n, e, True, *args, **kw)
    # the GPU's rule for which inputs take the kernels (stubbed here): bfloat16 too, which
    # the interpreter itself leaves to the naive twins
    runtime["_use_triton"] = lambda t: t.dtype in (torch.float32, torch.float16, torch.bfloat16)
    takes_grid = "grid" in cls.__init__.__code__.co_varnames
    torch.manual_seed(0)
    model = (cls(dim, grid) if takes_grid else cls(dim)).to(dtype)
    n = grid[0] * grid[1] if takes_grid or tokens is None else tokens
    x = torch.randn(batch, n, dim, dtype=dtype)
    tokens = (x.shape[1], batch * x.shape[1])
    result = {}
    for mode in ("forward, no_grad", "forward + backward"):
        launches.clear()
        inp = x.detach().requires_grad_(mode != "forward, no_grad")
        dy = torch.ones_like(x)  # made outside the census
        with torch.set_grad_enabled(inp.requires_grad), Census(tokens) as seen:
            y = model(inp)
            if inp.requires_grad:
                y.backward(dy)
        result[mode] = summarize(seen.ops, launches)
    return result


def summarize(ops, launches: Counter) -> dict:
    by_op: dict[str, list[float]] = {}
    for name, read, written, _ in ops:
        entry = by_op.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += (read + written) / 1e6
    glue = [op for op in ops if op[0] not in GEMMS]
    passes = [op for op in glue if op[3]]
    return {
        "torch_ops": len(ops), "glue_ops": len(glue),
        "gemm_mb": sum(r + w for n, r, w, _ in ops if n in GEMMS) / 1e6,
        "glue_mb": sum(r + w for _, r, w, _ in glue) / 1e6,
        "activation_passes": len(passes),
        "activation_pass_mb": sum(r + w for _, r, w, _ in passes) / 1e6,
        "triton_launches": sum(launches.values()),
        "by_op": {name: {"calls": c, "mb": mb}
                  for name, (c, mb) in sorted(by_op.items(), key=lambda kv: -kv[1][1])},
        "activation_pass_ops": dict(Counter(op[0] for op in passes)),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['spec']} {r['version']}\n{r['mode']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.5 * len(rows) + 2, 3.8))
    xs = range(len(rows))
    bottom = [0.0] * len(rows)
    for key, name in (("gemm_mb", "GEMMs"), ("activation_pass_mb", "glue: activation passes")):
        values = [r[key] for r in rows]
        ax.bar(xs, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    rest = [r["glue_mb"] - r["activation_pass_mb"] for r in rows]
    ax.bar(xs, rest, bottom=bottom, label="glue: the rest")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("MB read + written by torch ops")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-rev", nargs="+", default=[],
                    help="compare with the codegen committed at these revs")
    ap.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--grid", type=int, nargs=2, default=(56, 56))
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    grid = tuple(args.grid)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.specs:
            paths = {"current": ROOT / "codegen" / "triton" / f"{spec}.py"}
            for rev in args.baseline_rev:
                paths[rev] = source_at(rev, spec, Path(tmp))
            tokens = tokens_for(spec, grid[0] * grid[1])  # a grid spec's are the grid's
            for version, path in paths.items():
                for mode, s in census(path, version, args.dim, grid, args.batch,
                                      torch.bfloat16, tokens).items():
                    rows.append({"spec": spec, "version": version, "mode": mode,
                                 "tokens": tokens, **s})
                    print(spec, version, mode, {k: v for k, v in s.items()
                                                if not isinstance(v, dict)}, flush=True)
    command = " ".join(["python benchmarks/glue_census.py", *sys.argv[1:]])
    lines = [f"# Torch ops around the Triton kernels (bf16, dim {args.dim}, {grid[0]} x "
             f"{grid[1]} grid or N tokens, batch {args.batch})", "",
             f"Command: `{command}`; torch {torch.__version__}. Counted on the CPU on the GPU's "
             "code path (Triton launches stubbed, counted); MB read + written.", "",
             "| spec | N | version | mode | Triton launches | torch ops | GEMM MB | glue ops | "
             "glue MB | activation passes | their MB |", "|" + "---|" * 11]
    lines += [f"| {r['spec']} | {r['tokens']} | {r['version']} | {r['mode']} | "
              f"{r['triton_launches']} | "
              f"{r['torch_ops']} | {r['gemm_mb']:.1f} | {r['glue_ops']} | {r['glue_mb']:.1f} | "
              f"{r['activation_passes']} | {r['activation_pass_mb']:.1f} |" for r in rows]
    for r in rows:
        lines += ["", f"{r['spec']} ({r['version']}), {r['mode']}: calls, MB per op", "",
                  "| op | calls | MB | activation passes |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {e['calls']} | {e['mb']:.1f} | "
                  f"{r['activation_pass_ops'].get(name, 0)} |" for name, e in r["by_op"].items()]
    OUT.mkdir(parents=True, exist_ok=True)
    # other specs than the default ones: results of their own (glue_census_hyena.md, ...)
    stem = "glue_census" + ("" if tuple(args.specs) == DEFAULT_SPECS
                            else "_" + "_".join(args.specs))
    (OUT / f"{stem}.json").write_text(json.dumps(
        {"command": command, "torch": torch.__version__, "rows": rows}, indent=1))
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, OUT / f"{stem}.png")
    print("\n".join(lines[:6 + len(rows)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
