"""Specs shared by pass and certificate tests."""

from __future__ import annotations

from padre_compiler import dsl
from padre_compiler.spec.model import Spec


def sima_like(heads: int = 1) -> Spec:
    """SimA's numerator: contract( 1 1^T (E k ⊙ F v) ⊙ E q ) W."""
    x = dsl.tokens("sequence")
    q = dsl.expand(dsl.dense(x, "q"), mode="replicate", heads=heads)
    k = dsl.expand(dsl.dense(x, "k"), mode="replicate", heads=heads)
    v = dsl.expand(dsl.dense(x, "v"), mode="tile", heads=heads)
    z = dsl.global_sum(k * v) * q
    return dsl.spec("sima_like", layout="sequence",
                    output=dsl.dense(dsl.contract(z, heads=heads), "proj"))
