"""argparse types of the command lines (`padre`, `padre caote eval`): each turns a value into
what the command needs, or refuses it with a message that says what was expected."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable, Iterable


def grid(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 14x14, got '{text}'") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"grid sizes must be positive, got '{text}'")
    return h, w


def pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,D such as 4,2, got '{text}'") from None
    if a < 1 or b < 1:
        raise argparse.ArgumentTypeError(f"N and D must be positive, got '{text}'")
    return a, b


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_up_to(limit: int, why: str) -> Callable[[str], int]:
    """A positive integer no larger than `limit`; `why` says what a larger one would not buy."""
    def parse(text: str) -> int:
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"at most {limit}: {why}, got {value}")
        return value

    return parse


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer >= 0, got '{text}'"
                                         ) from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2^32), got {value}")
    return value


def param(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as a TOML value (3, -2.5, [-8, 2], "x") or else as a bare string."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as order=3, got '{text}'")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()


def param_flags(params: Iterable[tuple[str, object]]) -> str:
    """` --param KEY=VALUE` for each pair, VALUE written as TOML (what `param` reads) and
    the whole argument quoted for a POSIX shell."""
    return "".join(f" --param {shlex.quote(f'{k}={_toml(v)}')}" for k, v in params)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got '{text}'") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value
