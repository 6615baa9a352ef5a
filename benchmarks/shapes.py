"""The token count a benchmark runs a spec at: the shape's, or fewer where the spec is defined
for fewer (a sequence spec's long filter: Hyena's and Mamba-LTI's 1,024 taps)."""

from __future__ import annotations

from padre_compiler import load_spec
from padre_compiler.compiler import max_tokens

# under a 1,024-tap filter, and equal to no width, filter length or batch * N of the censuses
# (they tell activations by their token dimension)
LONG_FILTER_TOKENS = 1000


def tokens_for(spec: str, tokens: int) -> int:
    """`tokens`, or LONG_FILTER_TOKENS (at most the filter's taps) where `spec` is defined
    for fewer."""
    longest = min(max_tokens(load_spec(spec).graph()), default=None)
    return tokens if longest is None or tokens <= longest else min(longest, LONG_FILTER_TOKENS)
