"""Named, polynomial-preserving graph rewrites; `PIPELINES[backend]` is the order compile runs
them in for that backend."""

from padre_compiler.passes import linear, simplify  # noqa: F401  (registers the passes)
from padre_compiler.passes.base import PASSES, PassContext, PassRecord, run_pipeline

PIPELINE: tuple[str, ...] = (
    "eliminate_identity",
    "eliminate_dead",
    "cse",
    "merge_linear",
    "commute_column_normalizers",
    "distribute_contract",
    "reassociate_global_sums",
    "contract_expansions",
    "eliminate_dead",
    "fuse_siblings",
    "fuse_scaled_sum",
)

# fuse_siblings pays where one wide kernel replaces several launches (Triton). On CPU, oneDNN's
# 3C-wide depthwise conv and the strided splits it creates cost more than the three calls they
# replace: padre3 2-6% slower (benchmarks/results/cpu_ablation.md, allocator tuned).
PIPELINES: dict[str, tuple[str, ...]] = {
    "torch": tuple(p for p in PIPELINE if p != "fuse_siblings"),
    "triton": PIPELINE,
}

__all__ = ["PASSES", "PIPELINE", "PIPELINES", "PassContext", "PassRecord", "run_pipeline"]
