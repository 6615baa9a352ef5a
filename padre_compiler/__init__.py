"""padre-compiler: a symbolic compiler for polynomial attention (PADRe).

    import padre_compiler
    spec = padre_compiler.load_spec("padre3")
    mixer = padre_compiler.compile(spec, dim=384, grid=(14, 14))   # nn.Module, [B, N, 384]
"""

from padre_compiler.compiler import compile, generate
from padre_compiler.errors import ArgumentError, CertificateError, PadreError, SpecError
from padre_compiler.spec import dsl
from padre_compiler.spec.loader import load_spec
from padre_compiler.spec.model import Spec

__version__ = "0.1.0"
__all__ = ["ArgumentError", "CertificateError", "PadreError", "Spec", "SpecError", "compile",
           "dsl", "generate", "load_spec"]
