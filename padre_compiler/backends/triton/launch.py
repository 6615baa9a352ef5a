"""Launch grids within CUDA's limits, for every Triton launcher: the generated modules' (their
shared helpers paste this file's definitions: kernels.pasted) and the CAOTE kernel's.

A CUDA launch holds at most 2**31 - 1 programs on grid axis 0 and 65,535 on axes 1 and 2, and
fails past them; Triton's CPU interpreter runs any grid. Every launch goes through `start`,
which launches a grid within the limits as it is, folds an axis 1 past its limit onto axis 2
(the kernel reads its logical index with the jit helper `grid_axis1` under FOLD), and raises
GridLimitError where no fold makes the grid legal, in the interpreter as on a GPU.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable

# CUDA's programs per launch-grid axis (x, y, z)
GRID_LIMITS = (2**31 - 1, 65535, 65535)

# set where launches only compile (the conv launchers' compile_together): start warms up
COMPILING = contextvars.ContextVar("padre_compiling", default=False)


class GridLimitError(ValueError):
    """A launch grid past GRID_LIMITS that no fold brings within them: a GPU refuses it."""


def legal_grid(kernel: str, grid: tuple[int, ...], foldable: bool = True
               ) -> tuple[tuple[int, ...], bool]:
    """(the grid to launch, whether its axis 1 is folded) for `kernel`'s logical `grid` (up to
    three axes): the grid itself where every axis is within GRID_LIMITS. Past them, axis 1 of a
    two-axis grid (channel blocks in the conv and long-convolution launches) holding
    n > 65,535 programs launches as (grid[0], p, q): q = cdiv(n, 65,535) programs on axis 2,
    p = cdiv(n, q) <= 65,535 on axis 1. Its kernel reads the logical index as program_id(1) +
    p * program_id(2) (grid_axis1 under FOLD); the p q - n < q programs past n find every
    channel masked, so they load and store nothing. Any other excess raises GridLimitError
    naming the kernel, the axis, its programs and the limit: axis 0 holds each outer index's
    tiles (outer_tile), with no axis left to take its excess, axis 1 folds up to 65,535 x
    65,535 programs, and only for a kernel that reads it folded (`foldable`: it takes FOLD;
    a compiled launch refuses an undeclared FOLD with a KeyError, the interpreter drops it and
    runs axis 2's programs as repeats of axis 1's)."""
    limits = GRID_LIMITS
    if all(n <= limit for n, limit in zip(grid, limits, strict=False)):  # all but huge ones
        return grid, False
    fold = len(grid) == 2 and grid[1] > limits[1] and foldable
    for axis, n in enumerate(grid):
        folded = fold and axis == 1
        limit = limits[1] * limits[2] if folded else limits[axis]
        if n > limit:
            fix = ("run the batch in parts" if axis == 0 else
                   "split the channels across calls" if folded else
                   "its kernel reads no folded axis (FOLD): give it one, or split the work")
            raise GridLimitError(
                f"{kernel}: its launch grid needs {n:,} programs on axis {axis}, past the "
                f"{limit:,} a GPU launch holds there"
                + (" (axis 1 folded onto axis 2)" if folded else "") + f"; {fix}")
    q = -(-grid[1] // limits[1])
    return (grid[0], -(-grid[1] // q), q), True


def start(kernel: object, grid: tuple[int, ...]) -> Callable[..., object]:
    """kernel[grid], the launcher of a Triton kernel on its logical `grid`, made legal for a
    GPU (legal_grid; FOLD=True among the arguments where it folds axis 1, for a kernel that
    declares FOLD); where COMPILING is set, the kernel's warmup on that grid instead: compiled
    as the launch specialises it, not run."""
    grid, fold = legal_grid(getattr(kernel, "__name__", repr(kernel)), grid,
                            foldable="FOLD" in getattr(kernel, "arg_names", ()))
    run = functools.partial(kernel.warmup, grid=grid) if COMPILING.get() else kernel[grid]
    return functools.partial(run, FOLD=True) if fold else run
