"""The GPU benchmark script stays runnable without a GPU: its --smoke run (naive twins on the
CPU, tiny sizes) goes through every step and writes its table, JSON and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_TIMEOUT = 900  # s; a smoke run takes 13 s alone, minutes beside a loaded machine's jobs


def test_gpu_script_smoke_run_writes_every_result(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # a budget past the subprocess's limit: on a loaded machine the default 400 s ran out and
    # skipped the last models' rows, which this test reads
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke",
                           "--budget", str(2 * SCRIPT_TIMEOUT)],
                          env=dict(env, OUT=str(tmp_path)), capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_padre3.json").read_text())
    (row,) = result["rows"]
    assert not row.get("errors"), row.get("errors")
    for form in ("toeplitz", "direct"):
        assert row[f"conv3c_ms_{form}"] > 0 and row[f"conv3c_bwd_ms_{form}"] > 0
    assert set(result["meta"]["gate"]) == {"toeplitz", "direct", "slab", "slab2"}
    assert result["meta"]["sima"] and result["meta"]["castling_vit"]
    for name in ("castling_vit", "conv2former", "hyena"):
        assert all("ms" in r and r["max_rel_err_vs_torch"] < 1e-4 for r in result["meta"][name])
    assert all(row["first_call_s"][label] > 0 for label in ("triton", "triton_direct"))
    assert set(row["err_vs_eager"]) == {"triton", "triton_direct"} and "failed_check" not in row
    # after each Triton form's timed step: x's gradient and every parameter's, by spec name
    for label in ("triton", "triton_direct"):
        grads = row["grad_err_vs_eager"][label]
        assert len(grads) == 22 and "x" in grads and max(grads.values()) < 1e-4, grads
    assert row["attention_from"]["ms"] in ("attention_flash", "attention_cudnn")
    for name in gpu_models():
        (model,) = result["meta"][name]
        assert max(model["grad_err_vs_torch"].values()) < 1e-4 and "failed_check" not in model
    assert len(result["meta"]["source_digest"]) == 64
    table = (tmp_path / "gpu_padre3.md").read_text()
    assert table.startswith("#") and "The first forward call at each shape" in table
    assert "Source digest" in table and " FAILED |" not in table
    assert (tmp_path / "gpu_padre3.png").stat().st_size > 0


def gpu_models() -> dict:
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu

    return gpu.MODELS


def test_gpu_gradient_check_names_every_parameter_and_flags_a_wrong_one() -> None:
    """gpu.py's check after a timed training step: the hand-written module's gradients under
    the spec's names (spec_tensors) meet the compiled module's one for one (here the PyTorch
    backend's, on the CPU), and a gradient 1.5x off fails the row's check."""
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks import gpu

    hand, fused = gpu.build(gpu.load_generated("padre3", "torch"), 16, 196, "cpu",
                            torch.float32)
    x, g = torch.randn(2, 196, 16), torch.randn(2, 196, 16)
    want = gpu.gradients(hand, x, g, lambda m: m.spec_tensors(lambda p: p.grad))
    assert all(p.grad is None for p in hand.parameters())  # none left to accumulate into
    errs = gpu.grad_errors(gpu.gradients(fused, x, g), want)
    assert set(errs) == {"x", *dict(fused.named_parameters())} and max(errs.values()) < 1e-5
    row = {"C": 16, "N": 196}
    gpu.check(row, "triton gradients", max(errs.values()))
    assert "failed_check" not in row
    fused.mix2_token_weight.register_hook(lambda grad: 1.5 * grad)
    errs = gpu.grad_errors(gpu.gradients(fused, x, g), want)
    assert errs["mix2_token_weight"] > 0.3 and max(errs.values()) == errs["mix2_token_weight"]
    gpu.check(row, "triton gradients", max(errs.values()))
    assert row["failed_check"] == ["triton gradients"]


def test_gpu_attention_baseline_is_the_faster_backend_per_timing() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu

    row = {"ms": {"attention_flash": 2.0, "attention_cudnn": 1.0},
           "ms_graph": {"attention_flash": 1.5, "attention_cudnn": None},
           "ms_train": {"attention_flash": 3.0}}
    gpu.take_fastest(row, tuple(gpu.ATTENTION_BACKENDS), "attention")
    assert [row[f]["attention"] for f in gpu.TIMINGS] == [1.0, 1.5, 3.0]
    assert row["attention_from"] == {"ms": "attention_cudnn", "ms_graph": "attention_flash",
                                     "ms_train": "attention_flash"}
    assert "| 1.000 (cudnn) |" in gpu.markdown(
        {"device": "d", "torch": "t", "triton": "3", "cuda": "c", "gate": {},
         "peaks": {"matmul_flops": 1e15, "bandwidth": 4e12}},
        [{"C": 384, "N": 3136, "batch": 8, **row}])


def test_gpu_script_keeps_the_models_share_and_saves_after_every_row(tmp_path: Path,
                                                                     monkeypatch) -> None:
    """padre3's rows get the budget less the models' share (MODELS_SHARE): a row that spends
    all of it leaves every model its first shape; each row is written before the next
    starts. Without the share, the same run skips every model."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu

    clock = [0.0]
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(gpu, "peaks", lambda device, smoke: {"matmul_flops": 1.0,
                                                             "bandwidth": 1.0})
    monkeypatch.setattr(gpu, "gate", lambda mod, device, smoke: {"toeplitz": {"ok": True}})
    monkeypatch.setattr(gpu, "load_generated", lambda name, backend="triton": None)
    monkeypatch.setattr(gpu, "plot", lambda rows, path: None)
    seen = []

    def written() -> tuple[int, list[str]]:
        path = tmp_path / "gpu_padre3.json"
        result = json.loads(path.read_text()) if path.exists() else {"rows": [], "meta": {}}
        return len(result["rows"]), [m for m in gpu.MODELS if result["meta"].get(m)]

    def time_row(mod, c, n, batch, device, rates, budget, smoke):
        seen.append(("padre3", budget.left(), written()))
        clock[0] += budget.left()  # spends all it is given
        return {"C": c, "N": n, "batch": batch, "ms": {}, "ms_train": {}, "ms_graph": {}}

    def model_row(name, c, n, batch, device, smoke):
        seen.append((name, None, written()))
        clock[0] += 10
        return {"C": c, "N": n, "batch": batch, "ms": {}, "ms_train": {}}

    monkeypatch.setattr(gpu, "time_row", time_row)
    monkeypatch.setattr(gpu, "model_row", model_row)
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--smoke", "--budget", "200"])
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu.main() == 0
    assert seen[0] == ("padre3", 200 * (1 - gpu.MODELS_SHARE), (0, []))
    assert [(name, done) for name, _, done in seen[1:]] == [
        ("sima", (1, [])), ("castling_vit", (1, ["sima"])),
        ("conv2former", (1, ["sima", "castling_vit"])),
        ("hyena", (1, ["sima", "castling_vit", "conv2former"]))]
    monkeypatch.setattr(gpu, "MODELS_SHARE", 0.0)
    seen.clear()
    clock[0] = 0.0
    assert gpu.main() == 0 and [name for name, _, _ in seen] == ["padre3"]
    result = json.loads((tmp_path / "gpu_padre3.json").read_text())
    assert all(r["skipped"] for name in gpu.MODELS for r in result["meta"][name])


def test_gpu_compiles_no_baseline_before_every_target_row_is_timed(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """torch.compile of the hand-written module (a ~30 s compile at each of COMPILED_SHAPES)
    is timed once every target row is: compiled inside the first target row's timings, with
    the budget device_check.sh gives (230 s), it left a later target row none of its
    timings. With more budget both compiles are timed, and the rows' ratios include them.
    Every timing here costs the clock 3 s and a compile 50 s; the tensors are on the meta
    device."""
    sys.path.insert(0, str(ROOT))
    import torch
    from torch import nn

    from benchmarks import gpu

    clock = [0.0]
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: clock[0])

    class Fake(nn.Module):  # every module of a row: x * w, no cost but the clock's
        def __init__(self, c: int, *args, **kwargs) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

        def spec_tensors(self, of):
            return {"w": of(self.w)}

    class Compiled(nn.Module):  # torch.compile's module: its first call compiles, 50 s
        def __init__(self, module: nn.Module, **kwargs) -> None:
            super().__init__()
            self.module, self.compiled = module, False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.compiled:
                clock[0] += 50
                self.compiled = True
            return self.module(x)

    def median_ms(fn, device, **kwargs):  # every timing: 3 s
        fn()
        clock[0] += 3
        return 1.0

    def build(mod, c, n, device, dtype):
        return Fake(c).to(device, dtype), Fake(c).to(device, dtype)

    mod = types.SimpleNamespace(dwconv_hadamard=lambda *a, **k: None,
                                _dwconv_hadamard_bwd_impl=lambda *a, **k: None)
    monkeypatch.setattr(gpu, "load_generated", lambda name, backend="triton": mod)
    monkeypatch.setattr(gpu, "peaks", lambda device, smoke: {"matmul_flops": 1e12,
                                                             "bandwidth": 1e11})
    monkeypatch.setattr(gpu, "gate", lambda mod, device, smoke: {"toeplitz": {"ok": True}})
    monkeypatch.setattr(gpu, "plot", lambda rows, path: None)
    monkeypatch.setattr(gpu, "median_ms", median_ms)
    monkeypatch.setattr(gpu, "build", build)
    monkeypatch.setattr(gpu, "rel", lambda a, b: 0.0)
    monkeypatch.setattr(gpu, "HandwrittenPadre3", Fake)
    monkeypatch.setattr(gpu, "Attention", Fake)
    monkeypatch.setattr(gpu, "model_order", lambda smoke: [])

    class Torch(types.ModuleType):  # gpu.py's torch, its device a GPU's stand-in
        def __getattr__(self, name: str):
            return getattr(torch, name)

    fake_torch = Torch("torch")
    fake_torch.compile = lambda module, **kwargs: Compiled(module)
    fake_torch.device = lambda kind: torch.device("meta")  # no data: nothing to compute
    monkeypatch.setattr(gpu, "torch", fake_torch)
    monkeypatch.setenv("OUT", str(tmp_path))

    def run(budget: int) -> dict:
        clock[0] = 0.0
        monkeypatch.setattr(sys, "argv", ["gpu.py", "--budget", str(budget), "--dims", "384",
                                          "--tokens", *map(str, gpu.GRIDS)])
        gpu.main()
        rows = json.loads((tmp_path / "gpu_padre3.json").read_text())["rows"]
        return {(r["C"], r["N"]): r for r in rows}

    rows = run(230)
    for shape in gpu.TARGETS:
        assert rows[shape].get("x_attention_triton"), (shape, rows[shape])
    rows = run(500)
    for shape in ((384, 3136), (384, 25600)):
        assert rows[shape]["ms"].get("compiled_hand") == 1.0
        assert rows[shape]["x_attention_compiled_hand"] == 1.0


def test_gpu_times_the_3c_conv_on_the_input_the_module_gives_it(monkeypatch) -> None:
    """The 3C-wide conv timed alone (conv3c_ms_*) gets, in each form, the input the module's
    own 3C conv gets from dense_for_conv: channel-major with the dense bias left to the conv
    in the Toeplitz form, token-major with the bias added by F.linear in the direct form.
    Both forms had been timed on the Toeplitz form's input, which the direct kernel reads
    through strides, after a pass adding the bias. The fused calls are recorded, not run."""
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks import gpu

    mod = gpu.load_generated("padre3")
    c, n, batch = 16, 196, 2
    seen: dict[str, set] = {}

    def dwconv_hadamard(x, weight, *args, in_bias=None, **kwargs):
        if weight.shape[0] == 3 * c:  # the module's 3C conv and the one timed alone
            seen.setdefault(os.environ["PADRE_TRITON_CONV"], set()).add(
                (x.stride(1) == 1, in_bias is None))
        return torch.zeros(x.shape, dtype=x.dtype), torch.zeros(x.shape, dtype=x.dtype)

    monkeypatch.setattr(mod, "dwconv_hadamard", dwconv_hadamard)
    monkeypatch.setattr(mod, "_dwconv_hadamard_bwd_impl", lambda *a, **k: None)
    monkeypatch.setattr(gpu, "median_ms", lambda fn, device, **_: fn() and 1.0)
    row = gpu.time_row(mod, c, n, batch, torch.device("cpu"), {"matmul_flops": 1e12,
                                                                 "bandwidth": 1e11},
                       gpu.Budget(1e6), smoke=True)
    assert "conv3c" not in row.get("errors", {}), row.get("errors")
    assert seen == {"toeplitz": {(True, False)}, "direct": {(False, True)}}, seen


def test_every_model_is_timed_at_sizes_its_spec_is_defined_for() -> None:
    """gpu.py's model rows (Hyena's filter has 1,024 taps: at 3,136 tokens its module
    refuses the call, and the row would only record the error)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu
    from padre_compiler import load_spec
    from padre_compiler.compiler import max_tokens

    for name in gpu.MODELS:
        longest = min(max_tokens(load_spec(name).graph()), default=None)
        for _, n, _ in gpu.MODEL_SHAPES.get(name, gpu.ATTENTION_SHAPES):
            assert longest is None or n <= longest, (name, n, longest)


def test_gpu_profile_smoke_run_writes_its_tables(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_profile.py"),
                           "--smoke"], env=dict(env, OUT=str(tmp_path)), capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert {r["form"] for r in result["rows"]} == {"toeplitz", "slab", "direct"}
    assert all(r["kernels"] and r["train_kernels"] for r in result["rows"])
    sweep = result["meta"]["sweep"]
    assert sweep[0]["tiles"] == "cudnn" and all(r["ms"] for r in sweep)
    assert "Tile sweep" in (tmp_path / "gpu_profile.md").read_text()


def test_caote_split_smoke_run_checks_and_writes_its_table(tmp_path: Path) -> None:
    """The CPU dry run: each row's split and one-chunk kernels checked against the twin, the
    table written (split into more than one chunk a row, not timed)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "caote_split.py"),
                           "--smoke"], env=dict(os.environ, OUT=str(tmp_path)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "caote_split.md").read_text()
    rows = [line.split(" | ") for line in table.splitlines()
            if line.startswith(("| 100 ", "| 300 "))]
    assert len(rows) == 2 and all(int(r[1]) > 1 and r[3] == "-" for r in rows), table


def test_rounding_bound_smoke_run_writes_its_table(tmp_path: Path) -> None:
    """Every case and dtype a row, the bound holding wherever it is finite (slack <= 1), past
    undecided normalisations too."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rounding_bound.py"),
                           "--smoke"], env=dict(os.environ, OUT=str(tmp_path)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split(" | ") for line in (tmp_path / "rounding_bound.md").read_text()
            .splitlines() if line.startswith(("| castling_vit", "| sima"))]
    assert len(rows) == 9 and all(float(r[-1].rstrip(" |")) <= 1 and float(r[-2]) <= 1
                                  for r in rows), rows


def test_host_overhead_script_writes_its_table(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_overhead.py"),
                           "--specs", "padre3", "--burst", "3", "--repeats", "1"],
                          env=dict(os.environ, OUT=str(tmp_path)), capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # specs other than the default set: results of their own
    rows = json.loads((tmp_path / "host_overhead_padre3.json").read_text())["rows"]
    assert {r["mode"] for r in rows} == {"forward, no_grad", "forward, gradients on",
                                         "forward + backward"}
    assert all(r["current"] > 0 for r in rows)
    assert (tmp_path / "host_overhead_padre3.png").stat().st_size > 0
    assert not (tmp_path / "host_overhead.json").exists()


def test_gpu_table_names_the_tiles_picked_and_the_candidates_not_timed() -> None:
    """The first launches' picks (toeplitz.TUNED), every candidate's time against the default's
    (toeplitz.TIMES) and the variants the installed Triton compiled to an earlier candidate's
    code (toeplitz.SAME_CODE) reach gpu_padre3.md."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu

    key = ["wgrad", "cuda:0", "torch.bfloat16", "torch.bfloat16", "(8, 3136, 384)",
           "(1204224, 1, 3136)"]
    meta = {"device": "a GPU", "torch": "t", "triton": "3.6.0", "cuda": "c",
            "peaks": {"matmul_flops": 1e15, "bandwidth": 4e12}, "gate": {},
            "toeplitz_tiles": [{"key": key, "tiles": {"BC": 8, "STRIP_CACHE": ""}}],
            "same_code": [{"key": ["cuda:0", *key[1:]], "tiles": {"STRIP_CACHE": ".ca"},
                           "same_as": {"STRIP_CACHE": ""}}],
            "candidate_ms": [{"key": key, "times": [[{"BC": 8}, 0.3], [{"SLAB": True}, 0.2]]}]}
    text = gpu.markdown(meta, [])
    assert "| weight gradient | (8, 3136, 384) | SLAB=True | 0.2000 | 1.50 |" in text
    assert ("| weight gradient | (8, 3136, 384) | (1204224, 1, 3136) | BC=8, STRIP_CACHE='' |"
            in text)
    assert "| forward | (8, 3136, 384) | STRIP_CACHE='.ca' | STRIP_CACHE='' |" in text


def test_profile_sweep_leaves_out_strip_copies_the_triton_ignores() -> None:
    """Where the first launches found ".ca" compiled to the default's code (Triton 3.6.0),
    the tile sweep does not time those copies again; another duplicate does not count."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_profile

    base = {"BC": 8, "STRIP_CACHE": "", "num_stages": 3}
    ca = {("fwd",): [(dict(base, STRIP_CACHE=".ca"), base)]}
    other = {("fwd",): [(dict(base, num_stages=2), base)]}
    assert gpu_profile.strip_cache_ignored(ca)
    assert not gpu_profile.strip_cache_ignored(other) and not gpu_profile.strip_cache_ignored({})


def test_profile_sweep_saves_every_tile_before_a_limit_stops_it(monkeypatch) -> None:
    """The tile sweep saves after every tile: a run stopped inside a shape's sweep (the
    profile's time limit) keeps the tiles timed so far, where it had kept none of that
    shape's."""
    sys.path.insert(0, str(ROOT))
    import contextlib

    import torch
    import torch.nn.functional as F

    from benchmarks import gpu_profile

    def dwconv_hadamard(x, weight, bias, *rest):  # the conv, 14 x 14
        b, _, c = x.shape
        z = F.conv2d(x.mT.reshape(b, c, 14, 14), weight[:, None], bias, padding=5, groups=c)
        return z.flatten(2).mT, None, None

    mod = types.SimpleNamespace(dwconv_hadamard=dwconv_hadamard, SAME_CODE={},
                                dwconv_toeplitz_configs=lambda *a, **k: ({"BC": 8, "BH": 64},),
                                fastest=lambda key, configs, launch: configs[0],
                                compile_together=lambda configs, launch: None)
    timed = []

    def median_ms(fn, device, **_):  # cuDNN, the first tile, then the limit
        if len(timed) == 2:
            raise SystemExit("time limit")
        timed.append(1)
        return 1.0

    monkeypatch.setattr(gpu_profile, "median_ms", median_ms)
    saved = []
    with contextlib.suppress(SystemExit):
        gpu_profile.tile_sweep(mod, torch.device("cpu"), torch.float32, True, saved.append)
    assert saved and [r["tiles"] == "cudnn" for r in saved[-1]] == [True, False], saved
    assert saved[-1][1]["ms"] == 1.0


def test_gpu_script_times_the_target_shapes_first() -> None:
    """The budget may stop the timings before the last shape: the targets come first, then
    every other shape once."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu

    order = gpu.timing_order(gpu.DIMS, gpu.GRIDS)
    assert [shape[:2] for shape in order[:len(gpu.TARGETS)]] == sorted(gpu.TARGETS)
    assert sorted(order) == sorted((c, n, gpu.BATCH[n]) for c in gpu.DIMS for n in gpu.GRIDS)


def test_glue_census_counts_the_torch_passes_around_the_kernels(tmp_path: Path) -> None:
    """padre3's forward on the GPU's code path makes no torch pass over an activation besides
    its GEMMs, and its training step copies none to another layout; SimA's forward makes one
    (q's l1 norms over tokens; k's come from the state kernel; no normalised copy), and its
    training step no other than q's norms again (the norms' sign terms in the kernels);
    Castling-ViT's makes none, forward or backward, for its
    row normalisations (q's and k's in the attention's kernels, its output's in head_apply's
    epilogue) and none for its output's sum of three terms in the forward."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "glue_census.py"),
                           "--specs", "padre3", "sima", "castling_vit", "--dim", "16", "--grid",
                           "9", "9",
                           "--batch", "3"],
                          env=dict(os.environ, OUT=str(tmp_path)), capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {(r["spec"], r["mode"]): r
            for r in json.loads((tmp_path / "glue_census.json").read_text())["rows"]}
    forward = rows["padre3", "forward, no_grad"]
    assert forward["triton_launches"] == 3 and forward["activation_passes"] == 0
    step = rows["padre3", "forward + backward"]
    assert step["triton_launches"] > 3
    # no layout copy of an activation: dense_for_conv's backward gives dx token-major
    assert not {"aten.clone.default", "aten.copy_.default"} & set(step["activation_pass_ops"])
    sima = rows["sima", "forward, no_grad"]
    assert sima["activation_pass_ops"] == {"aten.linalg_vector_norm.default": 1}
    backward = rows["sima", "forward + backward"]["activation_pass_ops"]
    assert backward.get("aten.linalg_vector_norm.default") == 2
    assert not {"aten.div.Tensor", "aten.abs.default", "aten.sgn.default",
                "aten.mul_.Tensor"} & set(backward)
    assert rows["castling_vit", "forward, no_grad"]["activation_passes"] == 0
    backward = rows["castling_vit", "forward + backward"]["activation_pass_ops"]
    assert not {"aten.linalg_vector_norm.default", "aten.div.Tensor"} & set(backward)
    assert (tmp_path / "glue_census.png").stat().st_size > 0


def test_glue_census_sees_a_pass_over_an_activation() -> None:
    """The census above can fail: an elementwise op on [B, N, C] is an activation pass."""
    code = ("import torch, benchmarks.glue_census as g\n"
            "x = torch.randn(3, 81, 16)\n"
            "with g.Census((81, 243)) as c:\n"
            "    (x * 2).sum(-1)\n"
            "print(g.summarize(c.ops, g.Counter())['activation_passes'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2"]


def test_gpu_profile_keeps_the_rows_around_a_failing_one(tmp_path: Path, monkeypatch) -> None:
    """A form that fails (forced forms raise rather than fall back) is recorded; the rows
    before and after it are written, as each row is saved when it ends."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_profile

    def profile_form(mod, c, n, batch, form, device, dtype):
        if form == "slab":
            raise RuntimeError("slab refused")
        return {"C": c, "N": n, "batch": batch, "form": form, "launch_ms": 1.0,
                "graph_ms": None, "kernels": [], "train_kernels": []}

    monkeypatch.setattr(gpu_profile, "profile_form", profile_form)
    monkeypatch.setattr(sys, "argv", ["gpu_profile.py", "--smoke", "--no-sweep"])
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_profile.main() == 0
    result = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert [r["form"] for r in result["rows"]] == ["toeplitz", "direct"]
    assert "slab refused" in result["meta"]["errors"][0]
    assert "Rows that failed" in (tmp_path / "gpu_profile.md").read_text()


STUB_PYTHON = """#!/usr/bin/env bash
# device_check.sh's python: prints what it ran; the fuzz of sima's gradients fails, writing a
# regression test as padre fuzz does
echo "stub PADRE_TRITON_TUNE=${PADRE_TRITON_TUNE:-unset}: $*"
if [[ " $* " == *" fuzz sima "*" --grad "* ]]; then
    while [ $# -gt 0 ] && [ "$1" != --regressions ]; do shift; done
    mkdir -p "$2" && echo "def test_found(): assert False" >"$2/test_fuzz_sima_stub.py"
    exit 1
fi
"""


def test_device_check_keeps_a_fuzz_regression_and_fits_its_limit(tmp_path: Path) -> None:
    """device_check.sh with every python call stubbed: the fuzz steps run untuned, the
    regression test a failing one wrote (in a folder the script removes) reaches the log, the
    failure is named, and the steps' limits (step 1's run concurrently) sum to at most 580 s."""
    import re

    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("GPU_BUDGET", "CHECK_LIMIT",
                                                              "PROFILE_LIMIT", "GPU_ARGS",
                                                              "CAOTE_LIMIT")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh")],
                          env=dict(env, PYTHON=str(stub), OUT=str(out)), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    log = (out / "device_log.txt").read_text()
    assert "== regression test grad_sima/test_fuzz_sima_stub.py:" in log
    assert "def test_found(): assert False" in log
    assert "failed: fuzz_grad_sima" in log
    ran = [line for line in log.splitlines() if line.startswith("stub ")]
    fuzzes = [line for line in ran if " fuzz " in line]
    assert len(fuzzes) == 9 and all("PADRE_TRITON_TUNE=0:" in line for line in fuzzes)
    assert all("PADRE_TRITON_TUNE=unset" in line for line in ran if " fuzz " not in line)
    limits = {name: int(limit) for name, limit in
              re.findall(r"^== (\w+) \(\S+, limit (\d+) s\)", log, flags=re.M)}
    concurrent = max(v for k, v in limits.items() if k == "cuda_tests" or k.startswith("fuzz"))
    assert 20 + concurrent + sum(limits[k] for k in ("gpu_benchmark", "gpu_profile",
                                                     "caote_split")) <= 580, limits


def test_source_digest_names_the_commit_without_git(tmp_path: Path) -> None:
    """A result's source digest, taken from the files on disk, equals the digest git gives the
    commit they came from (git ls-tree), changes with any source file, and is the same once
    .git is gone (a lent GPU machine's copy); the revision is git's where there is a .git."""
    import shutil

    sys.path.insert(0, str(ROOT))
    from benchmarks import revisions

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout.strip()

    for rel in ("padre_compiler/a.py", "codegen/triton/b.py", "benchmarks/c.py", "specs/d.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    (tmp_path / "codegen" / "notes.md").write_text("not source\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    first = revisions.source_digest(tmp_path)
    assert first == revisions.digest_at("HEAD", tmp_path)
    assert revisions.git_revision(tmp_path) == git("rev-parse", "HEAD")
    (tmp_path / "specs" / "d.py").write_text("# outside the digested folders\n")
    (tmp_path / "codegen" / "notes.md").write_text("changed, not source\n")
    assert revisions.source_digest(tmp_path) == first
    (tmp_path / "codegen" / "triton" / "b.py").write_text("# changed\n")
    second = revisions.source_digest(tmp_path)
    assert second != first and revisions.git_revision(tmp_path).endswith("+changes")
    assert revisions.find_commits(second, root=tmp_path) == []
    git("commit", "-qam", "two")
    assert revisions.find_commits(second, root=tmp_path) == [git("rev-parse", "HEAD")]
    assert revisions.find_commits(first, root=tmp_path) == [git("rev-parse", "HEAD~1")]
    shutil.rmtree(tmp_path / ".git")
    assert revisions.source_digest(tmp_path) == second
    assert revisions.git_revision(tmp_path) is None


def test_profile_sweep_marks_a_tile_whose_output_is_off_the_default(monkeypatch) -> None:
    """A tile whose conv disagrees with the default tiles' is marked and not timed; the
    default tiles' output is compared with cuDNN's."""
    sys.path.insert(0, str(ROOT))
    import types

    import torch
    import torch.nn.functional as F

    from benchmarks import gpu_profile

    def dwconv_hadamard(x, weight, bias, *rest):  # the conv; 1.5x off with 16 channels a tile
        b, _, c = x.shape
        z = F.conv2d(x.mT.reshape(b, c, 14, 14), weight[:, None], bias, padding=5, groups=c)
        scale = 1.5 if mod.dwconv_toeplitz_configs()[0]["BC"] == 16 else 1.0
        return z.flatten(2).mT * scale, None, None

    mod = types.SimpleNamespace(dwconv_hadamard=dwconv_hadamard,
                                fastest=lambda key, configs, launch: configs[0],
                                compile_together=lambda configs, launch: None)
    timed = []
    monkeypatch.setattr(gpu_profile, "median_ms", lambda fn, device, **_: timed.append(1) or 1.0)
    results = gpu_profile.sweep_shape(mod, lambda *a, **k: ({"BC": 8, "BH": 64},), 4, 196, 1,
                                      [{"BC": 8}, {"BC": 16}], torch.device("cpu"),
                                      torch.float32)
    cudnn, same, off = results
    assert cudnn["tiles"] == "cudnn" and cudnn["err_vs_cudnn"] < 1e-5
    assert same["ms"] == 1.0 and same["err_vs_default"] == 0.0 and "disagrees" not in same
    assert off["ms"] is None and off["disagrees"] and abs(off["err_vs_default"] - 0.5) < 1e-6
    assert len(timed) == 2  # cuDNN and the tile that agrees
    meta = {"device": "d", "command": "c", "torch": "t", "triton": "3", "sweep": results}
    assert "| {'BC': 16} | wrong (5.0e-01 off the default) | 5.0e-01 |" in \
        gpu_profile.markdown(meta, [])
