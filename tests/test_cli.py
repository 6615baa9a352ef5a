"""The `padre` command: compile (source, --explain, --run, --all), verify, inspect."""

from __future__ import annotations

from pathlib import Path

import pytest

from padre_compiler import cli


def test_compile_explain_prints_every_pass_with_cost(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["compile", "padre3", "--dim", "32", "--grid", "6x7", "--explain"]) == 0
    out = capsys.readouterr().out
    for name in ("after spec", "after cse", "after merge_linear", "after fuse_scaled_sum"):
        assert name in out
    assert "MFLOP" in out and "dwconv2d" in out and "graph certificate" in out


def test_compile_run_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_file = tmp_path / "m.py"
    assert cli.main(["compile", "conv2former", "--dim", "16", "--grid", "4x5", "-o",
                     str(out_file), "--run"]) == 0
    out = capsys.readouterr().out
    for words in ("degree         2", "parameters", "FLOPs / token", "softmax attention",
                  "max rel. error vs float64 reference", str(out_file)):
        assert words in out
    assert "class Conv2former" in out_file.read_text()


@pytest.mark.parametrize("branch, output, terms", [
    # P = W1 ⊙ Z1 alone: its terms are P's own, not the branch's input X (the summary
    # walked back through every unary map to X)
    ('channel = { op = "dense", bias = true }', 'projection = { op = "dense" }',
     "W1⊙Z1: degrees {0,1}\n"),
    ('channel = { op = "identity" }', "", "W1⊙Z1: degrees {1} (homogeneous)\n"),
    # P = W1 ⊙ Z1 + L: the bias L is a term of its own (P, the bias node, was listed as the
    # only term, its summands' degrees merged)
    ('channel = { op = "dense", bias = true }', 'bias = true\nprojection = { op = "dense" }',
     "W1⊙Z1: degrees {0,1}; L: degrees {0} (homogeneous)\n"),
])
def test_the_summary_names_ps_terms(tmp_path: Path, capsys: pytest.CaptureFixture,
                                    branch: str, output: str, terms: str) -> None:
    spec = tmp_path / "one.toml"
    spec.write_text(f'layout = "sequence"\ndegree = 1\n[[branch]]\n{branch}\n'
                    f'token = {{ op = "identity" }}\n[output]\n{output}\n')
    assert cli.main(["compile", str(spec), "--dim", "8", "--run"]) == 0
    assert f"terms of P     {terms}" in capsys.readouterr().out


def test_inspect_lists_ps_terms_beside_its_bias(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    """output.bias adds L to P: inspect lists W1⊙Z1, W2⊙Z2 and L, not one term "P"."""
    spec = tmp_path / "two.toml"
    spec.write_text('layout = "sequence"\ndegree = 2\n' + '[[branch]]\nchannel = { op = '
                    '"dense" }\ntoken = { op = "identity" }\n' * 2 + '[output]\nbias = true\n'
                    'projection = { op = "dense" }\n')
    assert cli.main(["inspect", str(spec)]) == 0
    out = capsys.readouterr().out
    assert ("  term W1⊙Z1: degrees {1}, homogeneous\n  term W2⊙Z2: degrees {2}, homogeneous\n"
            "  term L: degrees {0}, homogeneous\n") in out, out


def test_a_spec_without_flops_is_summarised(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """X itself (identity maps, no weights): no FLOPs, no division by zero."""
    spec = tmp_path / "x.toml"
    spec.write_text('layout = "sequence"\ndegree = 1\n[[branch]]\nchannel = { op = '
                    '"identity" }\ntoken = { op = "identity" }\n[output]\nweights = "none"\n')
    assert cli.main(["compile", str(spec), "--dim", "8", "--run"]) == 0
    assert "(no FLOPs)" in capsys.readouterr().out


def test_compile_all_writes_every_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "codegen_dir", lambda: tmp_path)
    assert cli.main(["compile", "--all"]) == 0
    assert {p.stem for p in (tmp_path / "torch").glob("*.py")} >= {"padre3", "conv2former"}


def test_compile_all_names_the_files_it_wrote_from_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """From another folder, `wrote codegen/torch/x.py` named a file that is not there: the
    path is relative where the file is under the current folder, else absolute."""
    codegen = tmp_path / "checkout" / "codegen"
    monkeypatch.setattr(cli, "codegen_dir", lambda: codegen)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli.main(["compile", "--all"]) == 0
    assert f"wrote {codegen / 'torch' / 'padre3.py'}\n" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "checkout")
    assert cli.main(["compile", "--all"]) == 0
    assert "wrote codegen/torch/padre3.py\n" in capsys.readouterr().out


def test_verify_reports_the_certificate(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["verify", "padre3", "--dim", "16", "--grid", "5x6", "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 trials at N=30, D=16: passed" in out and "code certificate: passed" in out


def test_inspect_expands(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["inspect", "conv2former", "--expand", "4,2", "--expand-grid", "2x2"]) == 0
    out = capsys.readouterr().out
    assert "degrees in x: [0, 1, 2]" in out and "Z_{2} =" in out


def test_compile_refuses_a_width_the_spec_cannot_split(tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "sima.py"
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", "sima",
                           "--dim", "100", "-o", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "divisible by 8" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def _fails(argv: list[str], words: str, capsys: pytest.CaptureFixture) -> str:
    """The command exits 2 with one message containing `words`, and prints nothing else."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert words in captured.err and captured.out == "", captured
    return captured.err


def test_compile_output_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """-o writes a link's target through the link, refuses a folder or a path under a file,
    and leaves no temporary file behind."""
    target = tmp_path / "real.py"
    (tmp_path / "link.py").symlink_to(target)
    assert cli.main(["compile", "conv2former", "-o", str(tmp_path / "link.py")]) == 0
    assert (tmp_path / "link.py").is_symlink() and "class Conv2former" in target.read_text()
    capsys.readouterr()
    _fails(["compile", "conv2former", "-o", str(tmp_path)], "a folder", capsys)
    _fails(["compile", "conv2former", "-o", str(target / "x.py")], "is a file, not a folder",
           capsys)
    _fails(["compile", "conv2former", "-o", f"{tmp_path / 'new'}/"], "a folder", capsys)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    _fails(["compile", "conv2former", "-o", str(tmp_path / "loop")], "cannot follow", capsys)
    target.chmod(0o640)
    assert cli.main(["compile", "conv2former", "-o", str(target)]) == 0
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file keeps its permissions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "loop", "real.py"]


def test_compile_writes_a_device_without_replacing_it(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """-o to a pipe (as to /dev/null, the README's timing command) writes into it: a rename
    over it would replace the device by a regular file, where the user may do so."""
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert cli.main(["compile", "conv2former", "-o", str(fifo)]) == 0
    reader.join(timeout=60)
    assert fifo.is_fifo() and b"class Conv2former" in received[0]


def test_compile_refuses_options_it_would_ignore(capsys: pytest.CaptureFixture) -> None:
    _fails(["compile", "padre3", "--all", "-o", "x.py"], "takes no SPEC, -o", capsys)
    _fails(["compile", "--all", "--backend", "triton", "--dim", "64"], "takes no --backend, --dim",
           capsys)
    _fails(["compile", "padre3", "--tokens", "100"], "drop --tokens", capsys)
    _fails(["compile", "hyena", "--grid", "4x4"], "takes no --grid", capsys)


def test_inspect_checks_the_expansion_before_printing(capsys: pytest.CaptureFixture) -> None:
    err = _fails(["inspect", "padre3", "--expand", "4,2", "--expand-grid", "2x3"],
                 "--expand-grid 2x3 has 6 tokens", capsys)
    assert "N = 4" in err
    _fails(["inspect", "padre3", "--expand-grid", "2x2"], "give --expand N,D too", capsys)


def test_inspect_expands_a_normalised_spec_and_checks_its_width(
        capsys: pytest.CaptureFixture) -> None:
    """castling_vit's 8 heads do not split D = 4; its normalisers expand as opaque factors."""
    _fails(["inspect", "castling_vit", "--expand", "2,4"], "does not split into heads=8", capsys)
    # its smallest size (N = 1, D = 8) is past the monomial limit: no smaller one is offered
    err = _fails(["inspect", "castling_vit", "--expand", "1,8"], "the spec's smallest size",
                 capsys)
    assert "use fewer" not in err
    _fails(["inspect", "castling_vit", "--expand", "2,8"], "use fewer tokens or channels", capsys)
    _fails(["compile", "castling_vit", "--dim", "3"], "width 3 at dim=3 does not split", capsys)
    with pytest.raises(SystemExit):
        cli.main(["inspect", "padre3", "--expand", "0,2"])
    assert "must be positive" in capsys.readouterr().err


def test_inspect_expand_at_a_width_the_spec_lacks_names_the_file_and_op(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Widths D * D // 3 at D = 4: the expansion's weights were drawn before the widths were
    checked, and the error named neither the spec file nor the op ("width D*D//3 is not a
    positive integer at dim=4")."""
    spec = tmp_path / "heads3.toml"
    spec.write_text('layout = "sequence"\ndegree = 1\n[[branch]]\nchannel = [{ op = "dense" }, '
                    '{ op = "expand", heads = 3 }]\ntoken = "identity"\n[output]\nprojection = '
                    '{ op = "contract", heads = 3 }\n')
    err = _fails(["inspect", str(spec), "--expand", "2,4"],
                 "expand 'branch1_channel2': width 4 at dim=4 does not split into heads=3", capsys)
    assert f"{spec}: expansion at D=4" in err
    assert cli.main(["inspect", str(spec), "--expand", "2,3"]) == 0


def test_outputs_never_overwrite_inputs_or_outlive_a_failed_run(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import scale_run_check_modules

    """-o naming the spec (or --weights) is refused before any work; --run runs before -o is
    written, so a run that fails leaves no file; an empty -o is an error, not stdout."""
    spec = tmp_path / "mixer.toml"
    spec.write_text((Path(cli.__file__).parents[1] / "specs" / "conv2former.toml").read_text())
    before = spec.read_text()
    _fails(["compile", str(spec), "-o", str(spec)], "which writing would overwrite", capsys)
    assert spec.read_text() == before
    _fails(["compile", str(spec), "-o", ""], "an empty path", capsys)
    wrong = tmp_path / "wrong.py"  # a module the run check finds wrong is not written
    scale_run_check_modules(monkeypatch, 1.01)
    assert cli.main(["compile", str(spec), "--dim", "8", "--grid", "3x3", "--run", "-o",
                     str(wrong)]) == 1
    assert "not written" in capsys.readouterr().err and not wrong.exists()
    monkeypatch.undo()
    lc = tmp_path / "lc.toml"
    lc.write_text('layout = "sequence"\ndegree = 2\n[[branch]]\nchannel = { op = "dense", name '
                  '= "b" }\ntoken = { op = "long_conv", name = "h", length = 8 }\n[[branch]]\n'
                  'channel = { op = "dense", name = "c" }\ntoken = "identity"\n')
    out = tmp_path / "lc.py"
    assert cli.main(["compile", str(lc), "--dim", "4", "--tokens", "16", "--run", "-o",
                     str(out)]) == 2
    assert "defined for N <= 8; give --tokens <= 8" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["compile", str(lc), "--dim", "4", "--run", "-o", str(out)]) == 0
    assert "at N=8" in capsys.readouterr().out and out.exists()  # the default N is 8, not 196


def test_prove_refuses_a_proof_it_cannot_write_before_deriving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "proofs" / "sima.md").mkdir(parents=True)
    monkeypatch.setattr(cli, "checkout_path", lambda relative, *a: tmp_path / relative)
    _fails(["prove", "sima", "-q"], "a folder", capsys)
    assert [p.name for p in (tmp_path / "proofs").iterdir()] == ["sima.md"]


def test_seeds_and_family_bounds(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.main(["verify", "padre3", "--seed", "-5"])
    assert "a seed must be in [0, 2^32)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused at once, not run for hours
        cli.main(["verify", "padre3", "--trials", str(cli.MAX_TRIALS + 1)])
    assert f"--trials: at most {cli.MAX_TRIALS}" in capsys.readouterr().err
    _fails(["compile", "mamba", "--param", "decay_min=-1e308"], "below the minimum", capsys)
    assert cli.main(["families"]) == 0
    out = capsys.readouterr().out
    assert "(>= 1, <= 16)" in out
    # integral bounds as the errors print them, not in %g's rounded exponent form
    assert "states = 16: state size N_s (>= 1, <= 1,048,576)" in out
    assert "e+06" not in out


def test_out_of_memory_and_a_full_stdout_exit_1_without_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def raises(error: BaseException):
        def run(args):
            raise error
        return run

    for error, words in ((MemoryError(), "out of memory"),
                         (RuntimeError("DefaultCPUAllocator: can't allocate memory"),
                          "out of memory"),
                         (OSError(28, "No space left on device"), "No space left on device")):
        monkeypatch.setattr(cli, "cmd_families", raises(error))
        assert cli.main(["families"]) == 1
        assert words in capsys.readouterr().err
    monkeypatch.setattr(cli, "cmd_families", raises(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not hidden
        cli.main(["families"])


def test_dash_output_is_stdout(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["compile", "conv2former", "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert "class Conv2former" in captured.out and "graph certificate" in captured.err
    _fails(["compile", "conv2former", "-o", "-", "--run"], "give -o FILE", capsys)


def test_compile_writes_nothing_that_fails_its_certificate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`padre compile` checks the generated code too (not only with --run): a module that
    drops the 11 x 11 kernel's outer ring is not written, exit 1."""
    from padre_compiler.backends import pytorch

    old = "    y = F.conv2d(x4, weight.unsqueeze(1)"
    monkeypatch.setitem(pytorch.HELPERS, "dwconv2d", pytorch.HELPERS["dwconv2d"].replace(
        old, "    weight = weight.clone()\n    weight[:, [0, -1], :] = 0\n" + old))
    out = tmp_path / "p3.py"
    assert cli.main(["compile", "padre3", "--dim", "16", "--grid", "14x14", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "code certificate: FAILED" in err and "not written" in err and not out.exists()


def test_brackets_in_a_description_or_path_are_printed_as_written(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Rich markup is not read in user text: '[/]' in a description crashed inspect, and
    '[bold]' in -o's path was printed without it."""
    spec = tmp_path / "mixer.toml"
    spec.write_text((Path(cli.__file__).parents[1] / "specs" / "conv2former.toml").read_text()
                    .replace('description = "', 'description = "weights in [/] and [red]x[/red] '))
    assert cli.main(["inspect", str(spec)]) == 0
    assert "weights in [/] and [red]x[/red]" in capsys.readouterr().out
    out = tmp_path / "x[bold]y.py"
    assert cli.main(["compile", str(spec), "--dim", "8", "--grid", "3x3", "-o", str(out)]) == 0
    assert out.exists() and "x[bold]y.py" in capsys.readouterr().out
