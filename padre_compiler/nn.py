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

import functools
import inspect
import sys
from typing import Any

import torch
from torch import nn

from padre_compiler.compiler import as_spec, build, checked_grid, is_int
from padre_compiler.compiler import compile as compile_spec
from padre_compiler.errors import ArgumentError, CertificateError
from padre_compiler.spec.model import Spec


class PadreAttention(nn.Module):
    """A PADRe token mixer with timm's Attention constructor and forward signatures.

    Beyond timm's arguments: `spec` (a bundled spec's name, a path or a Spec), `grid_size`
    (H, W), the patch grid, which 2-D specs need and sequence specs refuse;
    `num_prefix_tokens`, the class or register tokens before the grid; `backend` ("torch",
    the default, or "triton"), passed to padre_compiler.compile. grid_size takes two positive
    integers and num_prefix_tokens a non-negative one (numpy's too). `dtype` defaults to
    torch.get_default_dtype(), as nn.Linear's.

    timm's num_heads, attn_head_dim, qkv_bias, qk_norm, scale_norm, proj_bias, attn_drop and
    norm_layer configure softmax attention: they are accepted, so that a model's constructor
    call need not change, and have no effect. The spec fixes the mixer's heads, biases and
    normalisations (sima has 8 heads whatever num_heads says); proj_drop drops the output.
    """

    @classmethod
    def configure(cls, **defaults: Any) -> type[PadreAttention]:
        """A subclass whose constructor takes `defaults` (grid_size=..., spec=...) unless a
        call gives them: for model code that wants an attention class, not a callable (a
        `functools.partial` fails `issubclass`, which timm's newer Block applies)."""
        settable = set(inspect.signature(cls.__init__).parameters) - {"self", "dim"}
        bad = sorted(set(defaults) - settable)
        if bad:
            raise TypeError(f"PadreAttention.configure: {', '.join(bad)} cannot be given a "
                            "default (dim is each layer's own; the others are not arguments)")
        return type(cls.__name__, (cls,), {
            "__init__": functools.partialmethod(cls.__init__, **defaults),
            "__reduce__": lambda self: (_configured, (cls, defaults, self.__getstate__())),
            "__module__": cls.__module__, "__doc__": cls.__doc__})

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 qk_norm: bool = False, scale_norm: bool = False, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_layer: Any = None,
                 device: Any = None, dtype: Any = None, *, attn_head_dim: int | None = None,
                 dim_out: int | None = None, spec: str | Spec = "padre3",
                 grid_size: tuple[int, int] | None = None, num_prefix_tokens: int = 0,
                 backend: str = "torch") -> None:
        super().__init__()
        # num_heads, attn_head_dim, qkv_bias, qk_norm, scale_norm, proj_bias, attn_drop and
        # norm_layer configure softmax attention; the spec fixes the mixer's structure instead.
        # Any other keyword is a TypeError (a misspelt grid_size is not ignored).
        self.num_prefix_tokens = _checked_prefix(num_prefix_tokens)
        self.grid_size = None if grid_size is None else checked_grid(grid_size, "grid_size")
        if dim_out is not None and dim_out != dim:
            raise ArgumentError(f"PadreAttention: dim_out={dim_out}, but the mixer maps width "
                                f"{dim} to {dim}; drop dim_out or set it to dim")
        spec = as_spec(spec)
        if spec.layout == "grid2d" and grid_size is None:
            raise ArgumentError(f"PadreAttention: spec '{spec.name}' mixes tokens on a 2-D grid: "
                                "pass grid_size=(H, W), the patch grid (e.g. (14, 14) for "
                                "224-pixel images of 16-pixel patches)")
        if spec.layout == "sequence" and grid_size is not None:
            raise ArgumentError(f"PadreAttention: spec '{spec.name}' mixes a 1-D token sequence: "
                                "drop grid_size (num_prefix_tokens still sets the prefix)")
        self.mixer = compile_spec(spec, dim=dim, grid=self.grid_size, dtype=dtype,
                                  backend=backend)
        self.dim = int(dim)  # compile_spec took it: a positive integer
        self.proj_drop = nn.Dropout(proj_drop)
        if device is not None:
            self.to(device=device)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle state (torch.save of a model, copy.deepcopy): the mixer's generated class
        lives in a module made at run time, which another process cannot import by name, so
        the mixer travels as its state plus what rebuilds its class (`__setstate__`)."""
        state = super().__getstate__()
        modules = dict(state["_modules"])
        mixer, modules["mixer"] = modules["mixer"], None  # its place kept: the module order
        cls = type(mixer)
        state["_modules"] = modules
        state["_mixer"] = (cls.__module__, cls.__qualname__, mixer.compiled.spec,
                           mixer.compiled.backend, mixer.__getstate__())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The mixer's class from its module where this process has it, else built (and
        certified) again from the spec, dim, grid and backend; then its pickled state."""
        state = dict(state)
        recipe = state.pop("_mixer", None)
        super().__setstate__(state)
        if recipe is None:  # pickled without it (as a plain nn.Module)
            return
        module, qualname, spec, backend, mixer_state = recipe
        cls = getattr(sys.modules.get(module), qualname, None)
        if cls is None:
            built = build(spec, self.dim, self.grid_size, backend)
            if not built.passed:
                raise CertificateError(None, built.certificate)
            cls = built.cls
        mixer = cls.__new__(cls)
        mixer.__setstate__(mixer_state)
        self._modules["mixer"] = mixer

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False, grid_size: tuple[int, int] | None = None,
                num_prefix_tokens: int | None = None) -> torch.Tensor:
        """x: [B, P + H * W, C] -> [B, P + H * W, C], P prefix tokens first, C = dim."""
        if attn_mask is not None or is_causal:
            raise NotImplementedError("PadreAttention mixes a fixed token grid: attention "
                                      "masks and is_causal cannot be honoured")
        if not isinstance(x, torch.Tensor):  # a list or an array: not "has no attribute ndim"
            raise ArgumentError(f"x is a {type(x).__name__}, but PadreAttention takes a tensor "
                                "[B, N, C]; convert it with torch.as_tensor(x)")
        if x.ndim != 3:
            fix = "add the batch axis: x.unsqueeze(0)" if x.ndim == 2 else "reshape it"
            raise ArgumentError(f"x has shape {tuple(x.shape)}, but PadreAttention takes "
                                f"[B, N, C] (batch, tokens, channels); {fix}")
        if x.shape[-1] != self.dim:
            raise ArgumentError(f"x has {x.shape[-1]} channels (shape {tuple(x.shape)}), but "
                                f"this PadreAttention was built for dim={self.dim}; build it "
                                f"with dim={x.shape[-1]} or project x to {self.dim} channels")
        prefix = (self.num_prefix_tokens if num_prefix_tokens is None else
                  _checked_prefix(num_prefix_tokens))
        if prefix >= x.shape[1]:
            raise ArgumentError(f"num_prefix_tokens={prefix} leaves none of the {x.shape[1]} "
                                "tokens to mix")
        if grid_size is not None and self.grid_size is None:
            raise ArgumentError("grid_size: this PadreAttention mixes a 1-D token sequence; "
                                "drop it")
        # this call's grid (timm's dynamic_img_size), else the one it was built with
        grid = self.grid_size if grid_size is None else checked_grid(grid_size, "grid_size")
        n = x.shape[1] - prefix
        if grid is not None and n != grid[0] * grid[1]:
            raise ArgumentError(f"{x.shape[1]} tokens = {prefix} prefix + {n} patch tokens, "
                                f"but the grid {grid[0]} x {grid[1]} has {grid[0] * grid[1]}")
        # the grid goes to the call, not to the mixer: concurrent calls share nothing
        mixed = self.mixer(x[:, prefix:]) if grid is None else self.mixer(x[:, prefix:], grid)
        if prefix:
            readout = mixed.mean(dim=1, keepdim=True).expand(-1, prefix, -1)
            mixed = torch.cat([readout, mixed], dim=1)
        return self.proj_drop(mixed)


def _checked_prefix(prefix: Any) -> int:
    """num_prefix_tokens as an int, or an ArgumentError: an integer >= 0 (`is_int`)."""
    if not (is_int(prefix) and prefix >= 0):
        raise ArgumentError(f"num_prefix_tokens must be an integer >= 0, got {prefix!r}")
    return int(prefix)


def _configured(base: type[PadreAttention], defaults: dict[str, Any],
                state: dict[str, Any]) -> PadreAttention:
    """Unpickles a module of `base.configure(**defaults)`: the class made again, its state
    set without running __init__ (pickle cannot find a class made at run time by name)."""
    cls = base.configure(**defaults)
    module = cls.__new__(cls)
    module.__setstate__(state)
    return module
