"""Hand-written PyTorch twins of the benchmarked mixers, and timm-style softmax attention of
the same width.

`HandwrittenPadre3` computes exactly specs/padre3.toml the way a careful engineer writes it
without the compiler; `IdiomaticPadre3`, the same function as one first writes it. Their
`to_spec_state_dict` maps the weights to the compiled module's parameter names, so benchmarks
check that the modules agree before timing them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class HandwrittenPadre3(nn.Module):
    """Y_i = DW_i(X B_i + b_i); Z_1 = Y_1; Z_{i+1} = DW'_i(Z_i D_i) ⊙ Y_{i+1};
    O = (w_1 Z_1 + w_2 Z_2 + w_3 Z_3) W_out + b_out.  x: [B, N, C] with N = H * W.

    Written with care: each depthwise conv reads a channels-last view of the [B, N, C]
    activations and returns one (conv_layout="nchw": a contiguous NCHW copy instead, which a
    GPU's cuDNN may run faster), each Y_i is made where it is used and dropped after, and P
    accumulates in place."""

    def __init__(self, dim: int, grid: tuple[int, int], kernel: int = 11,
                 conv_layout: str = "channels_last") -> None:
        super().__init__()
        if conv_layout not in ("channels_last", "nchw"):
            raise ValueError(f"conv_layout={conv_layout!r}: 'channels_last' or 'nchw'")
        self.grid, self.conv_layout = grid, conv_layout
        self.branch = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))
        self.branch_dw = nn.ModuleList(
            nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim) for _ in range(3))
        self.mix = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(2))
        self.mix_dw = nn.ModuleList(
            nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)
            for _ in range(2))
        self.weights = nn.Parameter(torch.ones(3, dim))
        self.proj = nn.Linear(dim, dim)

    def _dw(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        image = x.view(b, *self.grid, c).permute(0, 3, 1, 2)  # [B, C, H, W], channels last
        if self.conv_layout == "nchw":
            image = image.contiguous()
        return conv(image).permute(0, 2, 3, 1).reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._dw(self.branch_dw[0], self.branch[0](x))
        p = z * self.weights[0]
        for i in range(2):
            y = self._dw(self.branch_dw[i + 1], self.branch[i + 1](x))
            z = self._dw(self.mix_dw[i], self.mix[i](z)) * y
            del y
            p.addcmul_(z, self.weights[i + 1])
        del z
        return self.proj(p)

    @torch.no_grad()
    def off_init_(self) -> HandwrittenPadre3:
        """Biases and output weights drawn from N(0, 0.5) instead of their init (zeros, ones),
        so that no term is trivially zero and a mis-mapped one shows in a comparison."""
        for name, param in self.named_parameters():
            if param.dim() == 1 or name == "weights":
                param.normal_(0.0, 0.5)
        return self

    def spec_tensors(self, of: Callable[[nn.Parameter], torch.Tensor] = lambda p: p
                     ) -> dict[str, torch.Tensor]:
        """`of` each parameter (default: the parameter; `lambda p: p.grad`: its gradient)
        under specs/padre3.toml's parameter names, shaped as the compiled module's (a
        depthwise conv's [C, 1, KH, KW] as [C, KH, KW]); views, not copies."""
        out: dict[str, torch.Tensor] = {}
        for i in range(3):
            out[f"branch{i + 1}_channel_weight"] = of(self.branch[i].weight)
            out[f"branch{i + 1}_channel_bias"] = of(self.branch[i].bias)
            out[f"branch{i + 1}_token_weight"] = of(self.branch_dw[i].weight)[:, 0]
            out[f"branch{i + 1}_token_bias"] = of(self.branch_dw[i].bias)
            out[f"output_w{i + 1}_scale"] = of(self.weights)[i]
        for i in range(2):
            out[f"mix{i + 1}_channel_weight"] = of(self.mix[i].weight)
            out[f"mix{i + 1}_token_weight"] = of(self.mix_dw[i].weight)[:, 0]
        out["proj_weight"], out["proj_bias"] = of(self.proj.weight), of(self.proj.bias)
        return out

    def to_spec_state_dict(self) -> dict[str, torch.Tensor]:
        """The same weights under specs/padre3.toml's parameter names (copies)."""
        return {k: v.detach().clone() for k, v in self.spec_tensors().items()}


class IdiomaticPadre3(HandwrittenPadre3):
    """The same function as one first writes it: x.transpose(1, 2).reshape(B, C, H, W) into
    each conv (at batch 1 a stride PyTorch reads as NCHW: oneDNN copies the input in and the
    result out), and every intermediate held until the forward returns."""

    def _dw(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        y = conv(x.transpose(1, 2).reshape(b, c, *self.grid))
        return y.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self._dw(conv, lin(x)) for lin, conv in zip(self.branch, self.branch_dw, strict=True)]
        z = [y[0]]
        for i in range(2):
            z.append(self._dw(self.mix_dw[i], self.mix[i](z[-1])) * y[i + 1])
        p = self.weights[0] * z[0] + self.weights[1] * z[1] + self.weights[2] * z[2]
        return self.proj(p)


class Attention(nn.Module):
    """timm's Attention: qkv projection, scaled dot-product attention (SDPA), projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, c))
