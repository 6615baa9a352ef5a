"""Instance derivations: one module per model, each with `prove(write=..., path=...)` returning
a report with `.passed` and `.markdown` (the interface `padre_compiler.caote.derive` uses)."""

from __future__ import annotations

import importlib
from typing import Any

MODELS = ("hyena", "mamba_lti", "mamba", "sima", "conv2former", "castling_vit")


def derivation(name: str) -> Any:
    """The module whose `prove` derives `name` (caote lives in its own package)."""
    if name == "caote":
        return importlib.import_module("padre_compiler.caote.derive")
    return importlib.import_module(f"padre_compiler.derive.{name}")
