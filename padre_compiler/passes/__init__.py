"""Named, polynomial-preserving graph rewrites; `PIPELINE` is the order compile runs them in."""

from padre_compiler.passes import linear, simplify  # noqa: F401  (registers the passes)
from padre_compiler.passes.base import PASSES, PassContext, PassRecord, run_pipeline

PIPELINE: tuple[str, ...] = (
    "eliminate_identity",
    "eliminate_dead",
    "cse",
    "merge_linear",
    "reassociate_global_sums",
    "eliminate_dead",
    "fuse_siblings",
    "fuse_scaled_sum",
)

__all__ = ["PASSES", "PIPELINE", "PassContext", "PassRecord", "run_pipeline"]
