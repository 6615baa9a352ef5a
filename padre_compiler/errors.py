"""Errors the compiler raises on purpose. Each one says where, what and how to fix it."""

from __future__ import annotations


class PadreError(Exception):
    """Base class: the CLI prints these without a traceback and exits 2."""


class SpecError(PadreError):
    """A spec is invalid. Names the file, the field, the problem and the fix."""

    def __init__(self, field: str, problem: str, fix: str = "", source: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        field = f"{self.field}: " if self.field else ""
        fix = f"\n  fix: {self.fix}" if self.fix else ""
        return f"{where}{field}{self.problem}{fix}"

    def located(self, source: str, prefix: str = "") -> SpecError:
        """The same error, attributed to `source` and nested under field `prefix`."""
        field = f"{prefix}.{self.field}" if prefix and self.field else (prefix or self.field)
        return SpecError(field, self.problem, self.fix, source=self.source or source)


class ArgumentError(PadreError, ValueError):
    """A bad argument to a Python entry point (`compile`, `generate`, `PadreAttention` and its
    forward): a ValueError to Python callers, a message without a traceback to the CLI."""


class MissingRuleError(PadreError):
    """An op has no rule in a table (shape, cost, reference, a backend's lowering, ...)."""

    def __init__(self, op: str, table: str) -> None:
        self.op = op
        self.table = table
        super().__init__(f"op '{op}' has no rule in the {table} table; "
                         "add one beside its declaration")


class ShapeError(PadreError):
    """Channel widths or token layouts that do not compose."""


class CertificateError(PadreError):
    """A compiled module failed its certificate (a compiler bug, not bad input): the module is
    not handed out as correct. Carries the module and its certificate for inspection."""

    def __init__(self, module: object, certificate: object) -> None:
        self.module = module
        self.certificate = certificate
        super().__init__(f"the compiled module failed its certificate (please report this "
                         f"compiler bug with the spec):\n{certificate}")


def first_line(err: BaseException) -> str:
    """The first line of a foreign exception's message (its type where it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class PrecisionWarning(UserWarning):
    """A compiled module's dtype cannot compute its spec at its initial weights: the
    polynomial's terms cancel below its precision (mamba's expanded scan in float32)."""
