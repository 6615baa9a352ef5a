"""CAOTE: KV-cache eviction by the closed-form attention-output error (arXiv 2504.14051).

Public API (torch only; ``BlockwiseEvictor`` needs transformers, ``CAOTEPress`` needs kvpress
and is imported from ``padre_compiler.caote.press``, ``run_eval`` from ``.evaluate``):

- ``prove`` — sympy/numeric derivation; ``prove(write=True)`` (or ``padre prove caote``)
  writes ``proofs/caote.md``
- score functions — ``h2o_scores``, ``tova_scores``, ``snapkv_scores``, ``caote_scores``,
  ``fastcaote_scores`` (shapes in ``scores.py``)
- ``EvictionConfig``, ``BlockwiseEvictor`` — block-wise eviction on a transformers DynamicCache
"""

from padre_compiler.caote.derive import ProofReport, prove
from padre_compiler.caote.hf import BlockwiseEvictor
from padre_compiler.caote.policy import EvictionConfig, select_keep
from padre_compiler.caote.scores import (
    caote_from_weights,
    caote_scores,
    eviction_shift,
    fastcaote_from_weights,
    fastcaote_scores,
    h2o_scores,
    normalize,
    reduce_group,
    snapkv_scores,
    tova_scores,
)

__all__ = [
    "BlockwiseEvictor",
    "EvictionConfig",
    "ProofReport",
    "caote_from_weights",
    "caote_scores",
    "eviction_shift",
    "fastcaote_from_weights",
    "fastcaote_scores",
    "h2o_scores",
    "normalize",
    "prove",
    "reduce_group",
    "select_keep",
    "snapkv_scores",
    "tova_scores",
]
