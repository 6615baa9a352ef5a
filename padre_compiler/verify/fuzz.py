"""Fuzzing: hypothesis draws sizes, dtypes and weights; every compiled backend is compared with
the float64 reference, under the error rule below; a failure is shrunk to a minimal example and
written out as a pytest regression test.

Error rule (the FlashAttention convention). Inputs and weights are first rounded to the tested
dtype, and the float64 reference is computed from the rounded values, so only arithmetic error
is measured. A result must be within twice the error of its "eager" twin in the same dtype (the
unoptimised spec graph lowered op by op to PyTorch) plus 4 ulp of max|reference|; fp64 and fp32
also get a fixed relative tolerance (1e-9 and 1e-4 of max|reference|). The twin's error
measures the graph's own conditioning at this example: a few ulp for padre3, many orders more
for mamba's degree-403 surrogate polynomial, whose intermediates cancel; no extended-precision
evaluation is needed. Outputs are compared where the reference and the twin are finite (the
spec is undefined at 0/0 in an l2 normalisation with eps = 0, as Castling-ViT's 1-channel heads
at one token can sum to an exact zero; the twin overflows beyond the dtype's range), and a
non-finite result there fails. Elements that depend on a normalisation the dtype cannot
decide are judged otherwise: a forward rounding bound (padre_compiler.verify.rounding) marks
the rows whose error may reach their norm (an l2-normalised 1-channel head is the sign of an
entry that may cancel below the dtype's resolution), where the twin's rounding may get a sign
right by chance and a module's wrong, neither more correct. Those elements are held to the
bound itself, carried past such a row as the most two normalised rows can differ (a flipped
sign passes; a result no choice of those rows gives fails), not to the twin's error, wherever
the reference is finite (the twin too may round such a row to 0/0); where every normalisation's
eps is 0, a module may even round such a row to exactly 0 and meet the 0/0 the spec leaves
undefined, so a non-finite result is admitted there (with eps > 0 it fails, unless the twin's
is not finite either). An example is *judged* only where every element was compared or held to
the bound so, some were compared, and its allowance is below max|reference|: where the twin is
off by half the output or more (mamba in float32 or float16) even an all-zero output would
pass, so the example counts as run but not judged, and a fuzz run reports how many it judged
and how many held elements to the bound. A gradient example is judged where some gradient's
allowance is below its max|reference|.

Every example is checked in two regimes (`REGIMES`), and its outcome is the worse: "default"
draws weights around each op's default init at x ~ N(0, 1), where every term is large; "init"
draws each parameter that declares an init range on it and scales x by 1/100, where low-degree
terms lead (the code certificate's second probe: at default weights mamba's degree-403 terms
bury its skip term D ⊙ x below float64's resolution). "init" is checked in fp64, fp32 and
bf16, not fp16, whose narrow range squares x / 100 into subnormals.

Triton examples draw fp32 and fp16 under the CPU interpreter and bf16 as well on a GPU
(`fuzzed_dtypes`), and the depthwise conv's form (`PADRE_TRITON_CONV`): auto (the
launcher's choice), direct (CUDA cores), and where the module carries the tensor-core form (a
2-D map: `conv_forms`) toeplitz (tensor cores, with its channel-major dense inputs), slab
(toeplitz with every row tap's strip taken from one slab by row-shift products) or slab2 (the
slab in two column parts), so the interpreter runs every kernel variant; grids up to 16 wide
reach the Toeplitz kernel's 8-column aligned strips.

Gradients (`grad=True`, `padre fuzz --grad`): the compiled module's gradients of <out, g> (g a
random cotangent rounded to the dtype) with respect to the input and every parameter are
compared with float64 autograd of the eager twin, tensor by tensor, each within the larger of
the fixed tolerance times its max|reference| and, below fp64, four times the eager twin's own
error on it in the same dtype (the largest of three samples: the twin's error at the example's
input, its error at that input moved by 1-2 ulp, and how far that move shifts the float64
gradient itself, which shows how much rounding moves an ill-conditioned gradient:
Castling-ViT's l2-normalised 2-channel heads at 2 tokens have gradients that a 1-ulp move of
the float16 input shifts by as much as their size: no dtype-rounded computation of those is
better than another, and only the example's other gradients can judge it); plus 16 ulp of the
largest gradient's max|reference|, since a gradient may be a cancellation far below the others
(one sample of the twin's error understates its spread there). Widths with heads give each head
at least 2 channels, and sequences and grids have at least 2 tokens: a 1-channel head's l2
normalisation, or an l1 normalisation over 1 token, is a sign, whose gradient is zero up to a
cancellation's rounding noise that no relative rule bounds. This checks the derived backward
kernels (Triton) and every pass's effect on autograd (both backends). A gradient the eager twin
overflows too is not compared (mamba's surrogates, at random weights, overflow most of its fp16
and fp32 gradients; the torch backend's fp64 checks them). Gradient examples are checked in
both regimes, as outputs are: the floors are relative, so in the init regime, where the
gradients are small, an all-zero gradient still fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import math
import os
import pprint
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from padre_compiler.argtypes import param_flags
from padre_compiler.backends.pytorch import docstring_literal
from padre_compiler.backends.reference import INIT_INPUT_SCALE, random_params, run_graph
from padre_compiler.compiler import (
    as_spec,
    construct,
    eager_class,
    generate,
    load_source,
    max_tokens,
)
from padre_compiler.errors import PadreError
from padre_compiler.ir.graph import Graph, is_valid_dim, width_step
from padre_compiler.ir.ops import EvalContext
from padre_compiler.paths import bundled_stem
from padre_compiler.spec.literal import to_literal
from padre_compiler.spec.loader import load_spec
from padre_compiler.spec.model import Spec
from padre_compiler.verify.lowering import check_lowering
from padre_compiler.verify.poison import nan_poisoned
from padre_compiler.verify.rounding import Undecided, undecided

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
BACKEND_DTYPES = {"torch": ("float64", "float32", "float16", "bfloat16"),
                  "triton": ("float32", "float16", "bfloat16")}
INTERPRETER_DTYPES = ("float32", "float16")  # Triton's CPU interpreter multiplies bf16 wrong
FIXED_TOL = {"float64": 1e-9, "float32": 1e-4}
REGIMES = ("default", "init")  # weights and input scale (module docstring)
INIT_DTYPES = ("float64", "float32", "bfloat16")  # where "init" is checked
BACKEND_CONV_FORMS = {"torch": ("auto",),
                      "triton": ("auto", "direct", "toeplitz", "slab", "slab2")}


def conv_forms(backend: str, g: Graph) -> tuple[str, ...]:
    """The conv forms `backend`'s modules of graph g carry, to be drawn: the tensor-core ones
    only where a 2-D map makes the module carry them (a module of 1-D convs runs the direct
    form whatever PADRE_TRITON_CONV says: a drawn tensor-core form would test it again)."""
    forms = BACKEND_CONV_FORMS[backend]
    if not g.find("dwconv2d"):
        forms = tuple(f for f in forms if f in ("auto", "direct"))
    return forms


@dataclass(frozen=True)
class Example:
    dim: int
    tokens: int
    grid: tuple[int, int] | None
    batch: int
    dtype: str
    seed: int
    conv_form: str = "auto"  # PADRE_TRITON_CONV while the module runs (auto: unset)
    grad: bool = False  # the gradients of <out, g>, not the output (module docstring)


@contextlib.contextmanager
def conv_form(form: str) -> Iterator[None]:
    """PADRE_TRITON_CONV=form inside the block ("auto": unset), restored after."""
    old = os.environ.pop("PADRE_TRITON_CONV", None)
    if form != "auto":
        os.environ["PADRE_TRITON_CONV"] = form
    try:
        yield
    finally:
        os.environ.pop("PADRE_TRITON_CONV", None)
        if old is not None:
            os.environ["PADRE_TRITON_CONV"] = old


@dataclass(frozen=True)
class Outcome:
    example: Example
    error: float  # max |result - reference|
    allowed: float
    eager_error: float | None
    message: str = ""
    tensor: str = ""  # in gradient examples, the gradient whose error/allowed is the worst
    regime: str = "default"  # the regime (REGIMES) of the worse outcome
    judged: bool = True  # False: the allowance admits any output (module docstring)
    undecided: int = 0  # output elements judged by the rounding bound: a normalisation
    # upstream is undecided

    @property
    def ok(self) -> bool:
        return not self.message and self.error <= self.allowed


def default_device(backend: str) -> str:
    """Where a backend's modules run when fuzzed: Triton kernels on the GPU when there is one
    (without, CPU tensors under TRITON_INTERPRET=1); the torch backend on the CPU."""
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


def twin_allowance(twin_error: float, eps: float, scale: float) -> float:
    """The error a result may have beside its eager twin's in the same dtype (eps): twice the
    twin's, plus 4 ulp of max|reference| (`scale`)."""
    return 2 * twin_error + 4 * eps * scale


def output_allowance(dtype: str, twin_error: float, scale: float) -> float:
    """The output rule (module docstring): `twin_allowance`, plus the fixed tolerance of fp64
    and fp32 relative to max|reference|."""
    return FIXED_TOL.get(dtype, 0.0) * scale + twin_allowance(
        twin_error, torch.finfo(DTYPES[dtype]).eps, scale)


@dataclass(frozen=True)
class Comparison:
    error: float  # max |out - reference| where compared
    allowed: float
    twin_error: float | None  # the eager twin's, where compared
    scale: float  # max |reference| where compared
    whole: bool  # every element compared, or held to the bound where the twin is not finite
    # and the result is (the reference and the twin finite everywhere, less those)
    message: str = ""
    undecided: int = 0  # elements judged by the rounding bound: a normalisation upstream is
    # undecided

    @property
    def judged(self) -> bool:
        """Every finite element compared or undecided, and an all-zero output would fail."""
        return self.message != "" or (self.whole and self.allowed < self.scale)

    @property
    def ok(self) -> bool:
        return not self.message and self.error <= self.allowed


def compare(out: np.ndarray, ref: np.ndarray, twin: np.ndarray, dtype: str,
            undecided: Undecided | None = None) -> Comparison:
    """`out` against the float64 reference `ref` under the output rule, its eager twin `twin`
    run in `dtype`; compared where `ref` and `twin` are finite and no normalisation upstream
    is undecided (padre_compiler.verify.rounding), and at the undecided elements where `ref`
    is finite against the rounding bound; non-finite results fail where `ref` and `twin` are
    finite, except at undecided elements that may be the spec's 0 / 0 (module docstring)."""
    finite = np.isfinite(ref) & np.isfinite(twin)
    # held to the bound wherever the reference is finite: the twin is no measure there, and
    # may itself have rounded an undecided row to 0 / 0
    held = np.isfinite(ref) & (False if undecided is None else undecided.mask)
    whole = bool((finite | (held & np.isfinite(out))).all())
    compared = finite & ~held
    n_held = int(held.sum())
    must_be_finite = compared if undecided is not None and undecided.undefined else finite
    if not np.isfinite(out[must_be_finite]).all():
        return Comparison(math.inf, 0.0, None, 0.0, whole, "non-finite output where the "
                          "reference and the eager twin are finite", n_held)
    # a non-finite result where the twin is not finite either (past the dtype's range for the
    # twin too) is admitted, as at the decided elements
    beyond = held if undecided is None else \
        undecided.beyond(out, ref) & (finite | np.isfinite(out))
    if beyond.any():
        at = tuple(int(i) for i in np.argwhere(beyond)[0])
        return Comparison(math.inf, 0.0, None, 0.0, whole, f"{int(beyond.sum())} output "
                          "element(s) downstream of a normalisation the dtype cannot decide "
                          f"are off the reference by more than the rounding bound: at {at}, "
                          f"{abs(out[at] - ref[at]):.3g} > {undecided.bound[at]:.3g}", n_held)
    if not compared.any():
        return Comparison(0.0, 0.0, None, 0.0, False, undecided=n_held)
    scale = float(np.abs(ref[compared]).max())
    error = float(np.abs(out - ref)[compared].max())
    twin_error = float(np.abs(twin - ref)[compared].max())
    allowed = output_allowance(dtype, twin_error, scale)
    return Comparison(error, allowed, twin_error, scale, whole, undecided=n_held)


class Harness:
    """Compiles a spec once per backend (the generated classes are width-generic) and checks
    examples against the float64 reference (computed on the CPU)."""

    def __init__(self, spec: Spec, backend: str, device: str | None = None) -> None:
        self.spec = spec
        self.backend = backend
        self.device = torch.device(device or default_device(backend))
        self.graph = spec.graph()
        self.decls = self.graph.decls
        step = width_step(self.graph)  # a width near 384 that every head count divides
        result = generate(spec, backend=backend, dim=spec.fixed_dim or step * max(1, 384 // step))
        self.cls = getattr(load_source(result.source, spec.name), result.class_name)
        self.kernels = result.kernels
        self.eager_cls = eager_class(self.graph, spec.name)
        self.lowered: dict[tuple[Example, str], Outcome | None] = {}  # check_lowering's
        from padre_compiler.verify.run_check import TWINS, kernels_run  # it imports this

        ran = kernels_run(self.cls, torch.zeros(1, device=self.device)) \
            if backend == "triton" else ""
        if ran.startswith(TWINS):  # fuzzing them would check none of the kernels
            raise PadreError(f"fuzz --backend triton on {self.device}: the fused regions would "
                             f"run {ran}")

    def build(self, cls: type, ex: Example, params: dict[str, torch.Tensor],
              device: torch.device | None = None,
              dtype: torch.dtype | None = None) -> torch.nn.Module:
        """cls at the example's size with `params`, in `dtype` on `device` (default: the
        example's dtype, the harness's device)."""
        module = construct(cls, ex.dim, ex.grid)
        module = module.to(device=device or self.device, dtype=dtype or DTYPES[ex.dtype])
        module.load_state_dict(params)
        return module

    def inputs(self, ex: Example, regime: str = "default"
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(x, weights) drawn from the example's seed in `regime` (REGIMES) and rounded to its
        dtype: the references take the rounded values."""
        dtype = DTYPES[ex.dtype]
        init = regime == "init"
        params64 = random_params(self.graph.decls, ex.dim, seed=ex.seed, init_ranges=init)
        x64 = np.random.default_rng(ex.seed + 1).standard_normal((ex.batch, ex.tokens, ex.dim))
        x64 *= INIT_INPUT_SCALE if init else 1.0
        return (torch.tensor(x64).to(dtype),
                {k: torch.tensor(v).to(dtype) for k, v in params64.items()})

    def check(self, ex: Example) -> Outcome:
        """The example's outcome: the worse of its regimes' (module docstring). PadreError for
        a dtype whose kernels the harness's device does not run (`fuzzed_dtypes`: Triton's
        interpreter runs a bf16 module's naive twins, which pass whatever the kernels do)."""
        if ex.dtype not in fuzzed_dtypes(self.backend, self.device):
            raise PadreError(f"a {ex.dtype} example of the {self.backend} backend on "
                             f"{self.device} checks none of the kernels (their naive twins "
                             "run instead): it needs a CUDA device")
        regimes = REGIMES if ex.dtype in INIT_DTYPES else REGIMES[:1]
        check = self.check_grad if ex.grad else self.check_output
        return max((self.check_lowering(ex, regime) or check(ex, regime)
                    for regime in regimes), key=severity)

    def check_lowering(self, ex: Example, regime: str) -> Outcome | None:
        """A failure where the eager twin, run in float64 at the example's (rounded) inputs,
        is off the reference in long double (padre_compiler.verify.lowering): a lowering
        helper that the compiled module shares is wrong, and the twin's error no measure.
        Memoised: the twin, unlike `cls`, is the harness's own."""
        if (ex, regime) not in self.lowered:
            self.lowered[ex, regime] = self._check_lowering(ex, regime)
        return self.lowered[ex, regime]

    def _check_lowering(self, ex: Example, regime: str) -> Outcome | None:
        x, params = self.inputs(ex, regime)
        x, params = x.double(), {k: v.double() for k, v in params.items()}
        cpu = torch.device("cpu")
        with torch.no_grad():
            twin = self.build(self.eager_cls, ex, params, cpu, torch.float64)(x).numpy()
        lowering = check_lowering(twin, self.graph, x.numpy(),
                                  {k: v.numpy() for k, v in params.items()}, ex.grid)
        if lowering is None or lowering.ok:
            return None
        return Outcome(ex, lowering.error, lowering.allowed, None,
                       f"the spec lowered op by op is off the reference by {lowering.error:.1e}"
                       f" > {lowering.allowed:.1e} relative in float64: a lowering helper "
                       "that every compiled module shares is wrong", regime=regime)

    def check_output(self, ex: Example, regime: str) -> Outcome:
        """The output against the float64 reference under the output rule, in `regime`."""
        result = functools.partial(Outcome, ex, regime=regime)
        x, params = self.inputs(ex, regime)
        x64, params64 = x.double().numpy(), {k: v.double().numpy() for k, v in params.items()}
        ref = run_graph(self.graph, x64, params64, EvalContext(grid=ex.grid))
        held = undecided(self.graph, x64, params64, DTYPES[ex.dtype], EvalContext(grid=ex.grid))
        with torch.no_grad(), nan_poisoned(), conv_form(ex.conv_form):
            given = x.to(self.device, copy=True)  # the twin's input stays x
            out = self.build(self.cls, ex, params)(given).double().cpu().numpy()
        if not torch.equal(given.cpu(), x):
            return result(float("inf"), 0.0, None, "the module wrote into its input")
        if out.shape != ref.shape:
            return result(float("inf"), 0.0, None, "wrong shape")
        c = compare(out, ref, self.eager(ex, x, params), ex.dtype, held)
        return result(c.error, c.allowed, c.twin_error, c.message, judged=c.judged,
                      undecided=c.undecided)

    def gradients(self, cls: type, ex: Example, x: torch.Tensor,
                  params: dict[str, torch.Tensor], cotangent: torch.Tensor,
                  device: torch.device, dtype: torch.dtype) -> dict[str, np.ndarray]:
        """{"x" or a parameter's name: d<cls(x), cotangent>} in float64 on the CPU (zeros for
        a parameter the output does not read), the module run in `dtype` on `device`."""
        module = self.build(cls, ex, params, device, dtype)
        x = x.to(device=device, dtype=dtype).requires_grad_()
        names, weights = zip(*module.named_parameters(), strict=True)
        with nan_poisoned(), conv_form(ex.conv_form):
            out = module(x)
            grads = torch.autograd.grad(out, [x, *weights], cotangent.to(device, dtype),
                                        allow_unused=True)
        return {name: (torch.zeros_like(t) if g is None else g).double().cpu().numpy()
                for name, t, g in zip(("x", *names), (x, *weights), grads, strict=True)}

    def check_grad(self, ex: Example, regime: str) -> Outcome:
        """The gradients of <out, g> against float64 autograd of the eager twin, each under
        the gradient rule (module docstring), in `regime`; the worst gradient's error and
        allowance."""
        result = functools.partial(Outcome, ex, regime=regime)
        dtype = DTYPES[ex.dtype]
        x, params = self.inputs(ex, regime)
        g = torch.tensor(np.random.default_rng(ex.seed + 2).standard_normal(
            (ex.batch, ex.tokens, ex.dim))).to(dtype)
        cpu = torch.device("cpu")
        ref = self.gradients(self.eager_cls, ex, x, params, g, cpu, torch.float64)
        got = self.gradients(self.cls, ex, x, params, g, self.device, dtype)
        eps = torch.finfo(dtype).eps
        spread = {}  # per gradient, the largest of three samples (module docstring)
        if ex.dtype != "float64":
            sign = np.random.default_rng(ex.seed + 3).choice([-1.0, 1.0], size=tuple(x.shape))
            nudged = (x.double() * (1 + 2 * eps * torch.tensor(sign))).to(dtype)  # ~1-2 ulp
            for at in (x, nudged):
                want = ref if at is x else self.gradients(self.eager_cls, ex, at, params, g,
                                                          cpu, torch.float64)
                have = self.gradients(self.eager_cls, ex, at, params, g, self.device, dtype)
                for name in ref:
                    finite = np.isfinite(have[name]).all()
                    error = float(np.abs(have[name] - want[name]).max(initial=0.0)) \
                        if finite else float("inf")
                    # and how far the exact gradient itself moves with the input's rounding
                    moved = float(np.abs(want[name] - ref[name]).max(initial=0.0))
                    spread[name] = max(spread.get(name, 0.0), error, moved)
        size = {name: float(np.abs(want).max(initial=0.0)) for name, want in ref.items()}
        # the largest gradient the twin does not overflow
        floor = 16 * eps * max((v for k, v in size.items() if spread.get(k) != math.inf),
                               default=0.0)
        worst, judged = result(0.0, 0.0, None), False
        for name, want in ref.items():
            have = got[name]  # autograd gives each gradient its tensor's shape
            eager_error = spread.get(name)
            if not np.isfinite(have).all() and np.isfinite(want).all():
                if eager_error == float("inf"):
                    continue  # beyond the dtype's range for the eager twin too
                return result(float("inf"), 0.0, None, "non-finite gradient where the "
                              "reference is finite", name)
            error = float(np.abs(have - want).max(initial=0.0))
            allowed = FIXED_TOL.get(ex.dtype, 0.0) * size[name]
            if eager_error is not None:
                allowed = max(allowed, 4 * eager_error)
            allowed += floor
            judged |= allowed < size[name]  # an all-zero gradient would fail
            candidate = result(error, allowed, eager_error, "", name)
            if not worst.tensor or ratio(candidate) > ratio(worst):
                worst = candidate
        return dataclasses.replace(worst, judged=judged)

    def eager(self, ex: Example, x: torch.Tensor, params: dict[str, torch.Tensor]) -> np.ndarray:
        """The eager twin's output in the tested dtype, on the harness's device."""
        with torch.no_grad():
            module = self.build(self.eager_cls, ex, params)
            return module(x.to(self.device)).double().cpu().numpy()


def severity(outcome: Outcome) -> tuple[bool, bool, float]:
    """Orders outcomes: failures first, then judged ones, then by error / allowed."""
    return not outcome.ok, outcome.judged, ratio(outcome)


def ratio(outcome: Outcome | Comparison) -> float:
    """error / allowed (0 / 0: nothing compared)."""
    if outcome.allowed:
        return outcome.error / outcome.allowed
    return math.inf if outcome.error else 0.0


def fuzzed_dtypes(backend: str, device: torch.device) -> tuple[str, ...]:
    """The dtypes examples draw: the backend's, less bf16 for Triton off a GPU (the
    interpreter's bf16 products are wrong, so its modules run the naive twins in bf16)."""
    if backend == "triton" and device.type != "cuda":
        return INTERPRETER_DTYPES
    return BACKEND_DTYPES[backend]


def examples(spec: Spec, backend: str, grad: bool = False,
             device: torch.device | None = None) -> st.SearchStrategy[Example]:
    """Examples of `spec` for `backend`'s modules on `device` (default: the CPU)."""
    dtypes = fuzzed_dtypes(backend, device or torch.device("cpu"))
    g = spec.graph()
    step = width_step(g)
    forms = conv_forms(backend, g)

    # heads of 1 to 3 channels at least (a 1-channel head's K^T V state is 1 x 1 and hides
    # a transposed one); gradients: of at least 2 (module docstring)
    widths = (2 if step > 1 else 1, max(3, 12 // step)) if grad else (1, max(3, 12 // step))

    @st.composite
    def example(draw: st.DrawFn) -> Example:
        dim = spec.fixed_dim or step * draw(st.integers(*widths))
        if spec.layout == "grid2d":
            rows = draw(st.integers(1, 6))
            columns = [2, 3, 4, 5, 6, 8, 16] if grad and rows == 1 else [1, 2, 3, 4, 5, 6, 8, 16]
            grid = (rows, draw(st.sampled_from(columns)))
            tokens = grid[0] * grid[1]
        else:  # gradients: at least 2 tokens (module docstring)
            grid, tokens = None, draw(st.integers(2 if grad else 1, 17))
        batch, dtype = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from(dtypes))
        seed = draw(st.integers(0, 2**31 - 1))
        form = draw(st.sampled_from(forms))
        return Example(dim, tokens, grid, batch, dtype, seed, form, grad)

    return example()


# the largest token and channel block of any Triton kernel's launch on each device, a grid's
# rows or columns of tokens at most its square root (a test holds the launchers' tiles to
# them: the Toeplitz form's 64 rows on a GPU): the drawn sizes stay inside one block, where
# a launch grid rounded down, a mask or a chunk offset past the first block cannot show
BLOCKS = {"cpu": (256, 128), "cuda": (4096, 64)}


def boundary_examples(harness: Harness, grad: bool = False, seed: int = 0) -> list[Example]:
    """Examples one past each block of the Triton kernels on the harness's device (BLOCKS):
    many tokens at a narrow width, and a wide width at a few tokens; a grid spec's in the
    direct and the tensor-core conv form each, on a grid twice as wide as tall (side and 2 x
    side past a block's rows and columns in a different count of tiles, so a launcher that
    swapped height and width shows). A sequence stops at the spec's longest filter; a width the
    spec cannot take is left out."""
    tokens_block, channels_block = BLOCKS[harness.device.type]
    spec, step = harness.spec, width_step(harness.graph)
    narrow = spec.fixed_dim or step * max(1, 4 // step)
    wide = spec.fixed_dim or step * (channels_block // step + 1)
    if spec.layout == "grid2d":
        side = math.isqrt(tokens_block) + 1
        sizes = [(2 * side * side, (side, 2 * side), narrow), (6, (2, 3), wide)]  # (N, grid, D)
        forms = ("direct", "toeplitz")
    else:
        longest = min([tokens_block + 1, *max_tokens(harness.graph)])
        sizes = [(longest, None, narrow), (6, None, wide)]
        forms = ("auto",)
    found = [Example(dim, tokens, grid, 1, "float32", seed + k, form, grad)
             for k, ((tokens, grid, dim), form) in enumerate(itertools.product(sizes, forms))]
    return [ex for ex in found if valid(harness, ex)]


def valid(harness: Harness, ex: Example) -> bool:
    """Widths must be integers at this dim (heads must divide it) and explicit long
    filters at least as long as the sequence."""
    return is_valid_dim(harness.graph, ex.dim) and all(
        ex.tokens <= n for n in max_tokens(harness.graph))


class Failed(Exception):
    """An example failed (raised inside hypothesis so that it shrinks the example)."""


@dataclass
class FuzzReport:
    spec: str
    backend: str
    examples: int
    failure: Outcome | None
    regression: Path | None
    judged: int  # examples whose allowance is below max|reference| (module docstring)
    undecided: int = 0  # examples with output elements held to the rounding bound
    boundary: int = 0  # of `examples`, the boundary examples run before the drawn ones


def fuzz(spec: str | Path | Spec, *, backend: str = "torch", examples_n: int = 100,
         seed: int = 0, regression_dir: Path | None = None,
         on_example: Callable[[Outcome], None] | None = None,
         harness: Harness | None = None, device: str | None = None,
         grad: bool = False, boundary: bool | None = None) -> FuzzReport:
    """Run `examples_n` hypothesis examples; on failure shrink and write a regression test.
    `harness` replaces the compiled module under test (mutation testing); `device`: where the
    modules run (default: `default_device(backend)`); `grad`: check the gradients of the input
    and every parameter instead of the output (module docstring); `boundary` (default: where
    the module launches Triton kernels) runs `boundary_examples` first, beside the examples_n
    drawn."""
    spec_obj = as_spec(spec)
    if backend not in BACKEND_DTYPES:
        raise PadreError(f"unknown backend '{backend}'; fuzzable: {', '.join(BACKEND_DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PadreError("--device cuda: no CUDA device is visible to torch")
    harness = harness or Harness(spec_obj, backend, device)
    last_failure: list[Outcome] = []
    count, judged, partial = [0], [0], [0]

    def check(ex: Example) -> None:
        try:
            outcome = harness.check(ex)
        except Exception as err:  # a crash is a failure, shrunk and written like any other
            outcome = Outcome(ex, math.inf, 0.0, None, f"raised {type(err).__name__}: {err}")
        count[0] += 1
        judged[0] += outcome.judged
        partial[0] += outcome.undecided > 0
        if on_example is not None:
            on_example(outcome)
        if not outcome.ok:
            last_failure[:] = [outcome]
            raise Failed(outcome.message or f"error {outcome.error:.3e} > allowed "
                         f"{outcome.allowed:.3e}")

    @hypothesis_seed(seed)
    @settings(max_examples=examples_n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(examples(spec_obj, backend, grad, harness.device))
    def run(ex: Example) -> None:
        assume(valid(harness, ex))  # an invalid draw does not count toward examples_n
        check(ex)

    edges = boundary_examples(harness, grad, seed) if (
        harness.kernels if boundary is None else boundary) else []

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small examples: threads only add synchronisation
    try:
        for ex in edges:  # not shrunk: each is the smallest past its block
            check(ex)
        run()
    except Failed:
        pass
    finally:
        torch.set_num_threads(threads)
    failure = last_failure[0] if last_failure else None
    path = None
    if failure is not None and regression_dir is not None:
        try:
            path = write_regression(spec_obj, backend, failure, regression_dir)
        except PadreError as err:
            raise PadreError(f"{err}. The failing example: {describe(failure)}") from None
    return FuzzReport(spec_obj.name, backend, count[0], failure, path, judged[0], partial[0],
                      boundary=min(len(edges), count[0]))  # a failure may stop among them


def check_example(spec: str | Path | Spec, example: Example, backend: str = "torch",
                  params: dict[str, Any] | None = None) -> Outcome:
    """Re-run one example (what regression tests call); `params` set a family spec's
    parameters, as `padre fuzz --param` did."""
    if isinstance(spec, Spec) and params:
        raise PadreError("check_example: params set a family spec's parameters as it loads; "
                         "pass the spec's name or path, or a Spec built with them")
    spec_obj = spec if isinstance(spec, Spec) else load_spec(spec, params=params)
    return Harness(spec_obj, backend).check(example)


def replay_source(spec: Spec) -> tuple[str, str]:
    """How a regression test names the spec: (its definition, the expression naming it). A
    bundled spec by its name (portable across checkouts; family parameters are passed beside
    it); any other spec, built in Python or read from another file, as its literal
    (padre_compiler.spec.literal), so it replays without that code or file."""
    stem = bundled_stem(spec.source)
    if stem:
        return "", repr(stem)
    literal = pprint.pformat(to_literal(spec), width=80, sort_dicts=False)
    return (f"\n# the spec {spec.name} ({Path(spec.source).name}) when the failure was found\n"
            f"SPEC = from_literal({textwrap.indent(literal, ' ' * 19).lstrip()})\n\n\n"), "SPEC"


def write_regression(spec: Spec, backend: str, failure: Outcome, directory: Path) -> Path:
    """The failing example as a pytest file in `directory`; PadreError if it cannot be written."""
    ex = failure.example
    params = dict(spec.params)
    key = hashlib.sha256(repr((spec.name, backend, sorted(params.items()), asdict(ex)))
                         .encode()).hexdigest()[:10]
    path = directory / f"test_fuzz_{spec.name}_{backend}_{key}.py"
    flags = param_flags(params.items())
    flags += " --grad" if ex.grad else ""
    what = f"the gradient of {failure.tensor}: " if failure.tensor else ""
    what += f"in the {failure.regime} regime, " if failure.regime != "default" else ""
    why = " ".join(failure.message.split())[:300] or \
        f"error {failure.error:.3e} > allowed {failure.allowed:.3e}"
    why = docstring_literal(why)  # an exception's text, quotes and all
    definition, named = replay_source(spec)
    imports = "from padre_compiler.spec.literal import from_literal\n" if definition else ""
    # an example whose kernels run on a GPU only (`fuzzed_dtypes`) is skipped without one:
    # check_example refuses it there
    gpu = ex.dtype not in fuzzed_dtypes(backend, torch.device("cpu"))
    if gpu:
        imports = "import pytest\nimport torch\n\n" + imports
    mark = ("@pytest.mark.skipif(not torch.cuda.is_available(), reason=\"the kernels run "
            f"{ex.dtype} on a GPU only\")\n" if gpu else "")
    replay = f", params={params!r}" if params and not definition else ""
    summary = textwrap.fill(f'"""Regression found by `padre fuzz {spec.name} --backend '
                            f'{backend}{flags}` (shrunk example): {what}{why}."""', width=100,
                            break_long_words=False, break_on_hyphens=False)
    text = summary + "\n\n" + imports + textwrap.dedent('''\
        from padre_compiler.verify.fuzz import Example, check_example
        ''') + (definition or "\n\n") + mark + textwrap.dedent(f'''\
        def test_{spec.name}_{backend}_{key}() -> None:
            example = Example(dim={ex.dim}, tokens={ex.tokens}, grid={ex.grid!r},
                              batch={ex.batch}, dtype={ex.dtype!r}, seed={ex.seed},
                              conv_form={ex.conv_form!r}, grad={ex.grad!r})
            outcome = check_example({named}, example, backend={backend!r}{replay})
            assert outcome.ok, outcome
        ''')
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        raise PadreError(f"cannot write the regression test {path}: {err.strerror or err}; "
                         "pass --regressions a writable folder") from None
    return path


def describe(outcome: Outcome) -> dict[str, Any]:
    return {**asdict(outcome.example), "error": outcome.error, "allowed": outcome.allowed,
            "eager_error": outcome.eager_error, "message": outcome.message,
            "regime": outcome.regime,
            **({"tensor": outcome.tensor} if outcome.tensor else {})}
