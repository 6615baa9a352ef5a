"""Drop-in modules: a compiled PADRe mixer in timm's `Attention` slot.

timm's `Block` builds its attention layer as `attn_layer(dim, num_heads=..., qkv_bias=...,
qk_norm=..., scale_norm=..., proj_bias=..., attn_drop=..., proj_drop=..., norm_layer=...,
device=..., dtype=...)` and calls it as `attn(x)` or `attn(x, attn_mask=..., is_causal=...)`
with x [B, N, C]: prefix tokens (class, register, distillation) first, then the H * W patch
tokens row-major. The attention module is never told H and W, so `PadreAttention` takes
`grid_size` and `num_prefix_tokens` at construction (overridable per call) and refuses a token
count that does not match instead of guessing.

Prefix tokens are not on the grid. Rule: the grid tokens are mixed by the compiled spec; each
prefix token's output is the mean of the mixed grid tokens (a global read-out, as a class token
would get from attention) and the prefix tokens do not influence the grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from padre_compiler.compiler import as_spec
from padre_compiler.compiler import compile as compile_spec
from padre_compiler.errors import PadreError
from padre_compiler.spec.model import Spec


class PadreAttention(nn.Module):
    """A PADRe token mixer with timm's Attention constructor and forward signatures."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 qk_norm: bool = False, scale_norm: bool = False, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_layer: Any = None,
                 device: Any = None, dtype: Any = None, *, attn_head_dim: int | None = None,
                 dim_out: int | None = None, spec: str | Spec = "padre3",
                 grid_size: tuple[int, int] | None = None, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        _check_prefix(num_prefix_tokens)
        # num_heads, attn_head_dim, qkv_bias, qk_norm, scale_norm, proj_bias, attn_drop and
        # norm_layer configure softmax attention; the spec fixes the mixer's structure instead.
        # Any other keyword is a TypeError (a misspelt grid_size is not ignored).
        if dim_out is not None and dim_out != dim:
            raise PadreError(f"PadreAttention: dim_out={dim_out}, but the mixer maps width "
                             f"{dim} to {dim}; drop dim_out or set it to dim")
        self.grid_size = None if grid_size is None else (int(grid_size[0]), int(grid_size[1]))
        self.num_prefix_tokens = num_prefix_tokens
        spec = as_spec(spec)
        if spec.layout == "grid2d" and grid_size is None:
            raise PadreError(f"PadreAttention: spec '{spec.name}' mixes tokens on a 2-D grid: "
                             "pass grid_size=(H, W), the patch grid (e.g. (14, 14) for 224-pixel "
                             "images of 16-pixel patches)")
        if spec.layout == "sequence" and grid_size is not None:
            raise PadreError(f"PadreAttention: spec '{spec.name}' mixes a 1-D token sequence: "
                             "drop grid_size (num_prefix_tokens still sets the prefix)")
        self.mixer = compile_spec(spec, dim=dim, grid=grid_size, dtype=dtype)
        self.proj_drop = nn.Dropout(proj_drop)
        if device is not None:
            self.to(device=device)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False, grid_size: tuple[int, int] | None = None,
                num_prefix_tokens: int | None = None) -> torch.Tensor:
        """x: [B, P + H * W, C] -> [B, P + H * W, C], P prefix tokens first."""
        if attn_mask is not None or is_causal:
            raise NotImplementedError("PadreAttention mixes a fixed token grid: attention "
                                      "masks and is_causal cannot be honoured")
        prefix = self.num_prefix_tokens if num_prefix_tokens is None else num_prefix_tokens
        _check_prefix(prefix, x.shape[1])
        if grid_size is not None and self.grid_size is None:
            raise ValueError("grid_size: this PadreAttention mixes a 1-D token sequence; "
                             "drop it")
        grid = grid_size or self.grid_size
        n = x.shape[1] - prefix
        if grid is not None and n != grid[0] * grid[1]:
            raise ValueError(f"{x.shape[1]} tokens = {prefix} prefix + {n} patch tokens, but "
                             f"the grid {grid[0]} x {grid[1]} has {grid[0] * grid[1]}")
        if grid is not None:  # this call's grid (timm's dynamic_img_size), then the default
            self.mixer.grid = (int(grid[0]), int(grid[1]))
        try:
            mixed = self.mixer(x[:, prefix:])
        finally:
            if self.grid_size is not None:
                self.mixer.grid = self.grid_size
        if prefix:
            readout = mixed.mean(dim=1, keepdim=True).expand(-1, prefix, -1)
            mixed = torch.cat([readout, mixed], dim=1)
        return self.proj_drop(mixed)


def _check_prefix(prefix: Any, tokens: int | None = None) -> None:
    """num_prefix_tokens: an int >= 0, leaving at least one token to mix where `tokens` is
    known; ValueError otherwise."""
    if not (isinstance(prefix, int) and not isinstance(prefix, bool) and prefix >= 0):
        raise ValueError(f"num_prefix_tokens must be an integer >= 0, got {prefix!r}")
    if tokens is not None and prefix >= tokens:
        raise ValueError(f"num_prefix_tokens={prefix} leaves none of the {tokens} tokens to "
                         "mix")
