"""Static GPU-legality check of generated Triton kernels and their launch configurations.

The CPU interpreter (TRITON_INTERPRET=1) runs kernels a GPU compiler rejects or cannot fit:
non-power-of-two `tl.arange` extents, `tl.dot` tiles under 16, more shared memory than an SM
has, more warps than a block may hold, register tiles that spill, launch grids past 2**31 - 1
programs on axis 0 or 65,535 on axes 1 and 2. This module reads the kernel source (Python
AST: every `tl.arange` and `tl.dot` of every `@triton.jit` function, and the shape of every
register tile a launch makes, `tile_shapes.register_tiles`), takes the constexpr values (and
grid) a launcher would pass, and reports every violation, so tests on a CPU-only machine catch
what only a GPU would. (The launchers' `start` makes every grid legal or raises:
launch.legal_grid.)

Dot tiles: a kernel that calls `tl.dot` declares its tiles in the generated module's
`DOT_TILES = {kernel: [(batch, M, N, K), ...]}` (constexpr names or integers, one entry per
call site, those of the @triton.jit helpers it calls included, in the kernel's constexpr
names, or the kernel's own `NAME: tl.constexpr = expression` locals; a fifth element names
the constexpr under which the call runs); a call without a declaration, or a declaration
without a call, is itself an error.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass

from padre_compiler.backends.triton.launch import GRID_LIMITS
from padre_compiler.backends.triton.tile_shapes import jit_functions, register_tiles


@dataclass(frozen=True)
class GpuLimits:
    name: str = "H100 (sm_90)"
    shared_bytes: int = 227 * 1024  # opt-in shared memory per block
    max_warps: int = 32  # 1024 threads
    min_dot: int = 16  # smallest M, N, K of an MMA tile Triton accepts
    max_tile_regs: int = 128  # 32-bit registers per thread for one tile before it spills
    # per SM, for the programs it holds at once (aot.Resources.programs_per_sm)
    sm_registers: int = 65536  # 32-bit registers
    register_unit: int = 256  # registers are allocated per warp in units of 256
    sm_shared_bytes: int = 228 * 1024
    shared_reserved: int = 1024  # reserved per resident block (sm_80 and later)
    sm_warps: int = 64
    sm_blocks: int = 32
    grid: tuple[int, int, int] = GRID_LIMITS  # programs a launch holds per grid axis


H100 = GpuLimits()


class GpuLegalityError(ValueError):
    """A kernel configuration the interpreter accepts but a GPU rejects (or cannot fit)."""


@dataclass(frozen=True)
class KernelShape:
    name: str
    aranges: tuple[str, ...]  # source of each `end - start` extent
    dots: int  # number of tl.dot call sites
    calls: tuple[str, ...] = ()  # the names it calls (a @triton.jit helper's dots are its own)
    constexprs: tuple[tuple[str, str], ...] = ()  # `X: tl.constexpr = e` size locals, in order


def _is_tl(node: ast.AST, attr: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == attr and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "tl")


@functools.cache  # a generated module is parsed once however many launches are checked
def kernel_shapes(source: str) -> dict[str, KernelShape]:
    """Every @triton.jit function of `source` with its arange extents and dot call sites."""
    shapes: dict[str, KernelShape] = {}
    for fn in jit_functions(source).values():
        aranges, dots, calls, constexprs = [], 0, [], []
        for node in ast.walk(fn):
            if (isinstance(node, ast.AnnAssign) and node.value is not None
                    and ast.unparse(node.annotation) == "tl.constexpr"
                    and not any(isinstance(c, ast.Constant) and isinstance(c.value, str)
                                for c in ast.walk(node.value))):  # a size, not a dot precision
                constexprs.append((node.lineno, ast.unparse(node.target),
                                   ast.unparse(node.value)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                calls.append(node.func.id)
            if _is_tl(node, "arange"):
                start, end = (ast.unparse(a) for a in node.args[:2])
                aranges.append(end if start == "0" else f"({end}) - ({start})")
            elif _is_tl(node, "dot"):
                dots += 1
        shapes[fn.name] = KernelShape(fn.name, tuple(aranges), dots, tuple(calls),
                                      tuple(c[1:] for c in sorted(constexprs)))  # source order
    return shapes


def _callees(shapes: dict[str, KernelShape], name: str) -> list[KernelShape]:
    """`name` and the @triton.jit helpers it calls, transitively (a helper once per call)."""
    return [shapes[name], *(h for c in shapes[name].calls if c in shapes
                            for h in _callees(shapes, c))]


def _value(expr: str | int, consts: dict[str, int]) -> int:
    if isinstance(expr, int):
        return expr
    try:
        return int(eval(expr, {"__builtins__": {}}, dict(consts)))  # names and arithmetic only
    except NameError as err:
        raise GpuLegalityError(
            f"extent '{expr}' uses a value the launch does not fix: {err}") from None


def check_launch(source: str, kernel: str, consts: dict[str, int], *, num_warps: int,
                 num_stages: int = 1, elem_bytes: int = 2,
                 dot_tiles: dict[str, list[tuple]] | None = None,
                 limits: GpuLimits = H100, grid: tuple[int, ...] | None = None) -> list[str]:
    """Every reason `kernel` of `source`, launched with constexprs `consts` (on `grid`, where
    given), fails on a GPU."""
    shapes = kernel_shapes(source)
    if kernel not in shapes:
        return [f"{kernel}: no @triton.jit function of that name in the source"]
    shape = shapes[kernel]
    launch = dict(consts)
    consts = dict(consts)
    for name, expr in shape.constexprs:  # a local may use an earlier one
        consts[name] = _value(expr, consts)
    problems: list[str] = []
    if grid is not None and len(grid) > len(limits.grid):
        problems.append(f"{kernel}: a launch grid has at most {len(limits.grid)} axes, not "
                        f"{len(grid)}")
    for axis, (n, limit) in enumerate(zip(grid or (), limits.grid, strict=False)):
        if n > limit:
            problems.append(f"{kernel}: grid axis {axis} has {n:,} programs (> {limit:,})")
    if num_warps < 1 or num_warps & (num_warps - 1) or num_warps > limits.max_warps:
        problems.append(f"{kernel}: num_warps={num_warps} must be a power of two <= "
                        f"{limits.max_warps}")
    for expr in (e for f in _callees(shapes, kernel) for e in f.aranges):
        n = _value(expr, consts)
        if n < 1 or n & (n - 1):
            problems.append(f"{kernel}: tl.arange extent {expr} = {n} is not a power of two")
    tiles, unsized = register_tiles(source, kernel, launch, elem_bytes)
    for tile in tiles:
        regs = tile.per_thread(num_warps)
        if regs > limits.max_tile_regs:
            problems.append(f"{kernel}: tile {list(tile.shape)} of `{tile.expr}` "
                            f"({tile.function}, line {tile.line}) is {math.ceil(regs)} "
                            f"registers per thread at num_warps={num_warps} "
                            f"(> {limits.max_tile_regs}: spills)")
    problems += [f"{kernel}: {reason}" for reason in unsized]
    declared = (dot_tiles or {}).get(kernel, [])
    dots = sum(f.dots for f in _callees(shapes, kernel))
    if len(declared) != dots:
        problems.append(f"{kernel}: {dots} tl.dot call(s) but {len(declared)} declared in "
                        "DOT_TILES")
    smem = 0
    for tile in declared:
        if len(tile) == 5 and not _value(tile[4], consts):
            continue  # a tl.dot under a constexpr branch this launch does not take
        batch, m, n, k = (_value(d, consts) for d in tile[:4])
        for label, v in (("M", m), ("N", n), ("K", k)):
            if v < limits.min_dot or v & (v - 1):
                problems.append(f"{kernel}: dot tile {label} = {v} must be a power of two >= "
                                f"{limits.min_dot}")
        # Triton's pipeliner keeps num_stages - 1 buffers of each operand (an H200 refused
        # BC = 16, BH = 64 at 4 stages: 245,760 bytes = 3 x 81,920). One dot's operands at a
        # time: a kernel's dots are constexpr alternatives or run one after another (the
        # epilogue's products reuse the main loop's buffers), so the largest decides
        smem = max(smem, batch * (m * k + k * n) * elem_bytes * max(num_stages - 1, 1))
    if smem > limits.shared_bytes:
        problems.append(f"{kernel}: dot operands need ~{smem // 1024} KiB of shared memory "
                        f"(> {limits.shared_bytes // 1024} KiB on {limits.name})")
    return problems


def assert_legal(source: str, kernel: str, consts: dict[str, int], **kw) -> None:
    problems = check_launch(source, kernel, consts, **kw)
    if problems:
        raise GpuLegalityError("; ".join(problems))
