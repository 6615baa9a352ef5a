"""The generated kernels compiled for sm_90 by Triton's real pipeline (ptxas included) on the
CPU: the GPU launch configurations compile quickly and keep every value in registers."""

from __future__ import annotations

import pytest

from padre_compiler.backends.triton import aot
from padre_compiler.cli import codegen_path

pytestmark = pytest.mark.skipif(not aot.available(),
                                reason="Triton's NVIDIA backend (cuobjdump) is not installed")
FLAGS = dict(HAS_BIAS=True, HAS_GATE=True, HAS_ACC=True, HAS_ACC_SCALE=True, HAS_SCALE=True)
GRADS = {k: "fp32" for k in ("dw", "db", "ds", "dsa")}


PATH = codegen_path("padre3", "triton")


@pytest.fixture(scope="module")
def padre3():
    """The generated module (for its launch-configuration functions)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("aot_padre3", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _taps(k: int) -> dict[str, int]:
    return dict(KH=k, KW=k, PH=k // 2, PW=k // 2)


def _tiles(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "num_warps"}


@pytest.mark.parametrize("kernel", ["dwconv_hadamard_fwd_kernel", "dwconv_hadamard_bwd_kernel"])
def test_direct_kernels_at_gpu_tiles_do_not_spill(padre3, kernel: str) -> None:
    backward = kernel == "dwconv_hadamard_bwd_kernel"
    cfg = padre3.dwconv_hadamard_config(3136, 384, gpu=True, backward=backward)
    extra = dict(HAS_DZ=True, HAS_DO=True) if backward else dict(STORE_Z=True, STORE_O=True)
    r = aot.compile_kernel(PATH, kernel, dict(FLAGS, **_taps(11), **extra, **_tiles(cfg)),
                           num_warps=cfg["num_warps"], pointer_dtypes=GRADS)
    assert r.stack == 0, f"{kernel} spills {r.stack} bytes per thread at {cfg}"
    assert r.registers <= 255 and r.seconds < 30
    assert r.mma == "none"  # shifted loads and FMAs on CUDA cores


@pytest.mark.parametrize(("taps", "height"), [(11, 56), (31, 80)])
def test_toeplitz_kernel_at_gpu_tiles_does_not_spill(padre3, taps: int, height: int) -> None:
    cfg = padre3.dwconv_toeplitz_config(384, taps, gpu=True, height=height)
    consts = dict(FLAGS, STORE_Z=True, STORE_O=True, **_taps(taps), **_tiles(cfg))
    r = aot.compile_kernel(PATH, "dwconv_toeplitz_fwd_kernel", consts,
                           num_warps=cfg["num_warps"], num_stages=2)
    assert r.stack == 0, f"toeplitz spills {r.stack} bytes per thread at {cfg}"
    assert r.shared <= 227 * 1024
    assert r.mma != "none"  # the banded products run on tensor cores


def test_a_spilling_tile_is_reported(padre3) -> None:
    """The check can fail: a [128, 128] tile on 4 warps does not fit in registers."""
    consts = dict(FLAGS, STORE_Z=True, STORE_O=True, **_taps(11), BT=128, BC=128)
    r = aot.compile_kernel(PATH, "dwconv_hadamard_fwd_kernel", consts, num_warps=4)
    assert r.stack > 0


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
def test_linear_attention_kernels_at_gpu_tiles_do_not_spill(bf16: bool) -> None:
    """SimA's kernels at D = 384, 8 heads (e = 48), 3,136 tokens."""
    path = codegen_path("sima", "triton")
    cfg = {"BE": 64, "BT": 64, "CHUNK": 1024, "num_warps": 8}  # head_config(3136, 48, True)
    dtype = "bf16" if bf16 else "fp32"
    state = aot.compile_kernel(path, "head_state_kernel",
                               dict(E=48, IEEE=not bf16, CHUNK=cfg["CHUNK"], BT=cfg["BT"],
                                    BE=cfg["BE"]), num_warps=cfg["num_warps"],
                               pointer_dtype=dtype, pointer_dtypes={"p": "fp32"})
    apply = aot.compile_kernel(path, "head_apply_kernel",
                               dict(E=48, TRANS=False, F32=not bf16, BT=cfg["BT"], BE=cfg["BE"]),
                               num_warps=cfg["num_warps"], pointer_dtype=dtype,
                               pointer_dtypes={"s": "fp32"})
    assert state.stack == 0 and apply.stack == 0, (state, apply)
    if bf16:  # Hopper's warpgroup MMA for the 16-bit products
        assert state.mma == apply.mma == "wgmma", (state.mma, apply.mma)
