"""Bad specs get one clear error: the file, the field, the problem and the fix; the CLI exits
2 without a traceback and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from padre_compiler import SpecError, load_spec

GOOD = """
layout = "sequence"
degree = 2
[[branch]]
channel = { op = "dense" }
token = { op = "dwconv1d", kernel = 3 }
[[branch]]
channel = { op = "dense" }
token = { op = "identity" }
"""

FAMILY = """
family = "hyena"
[parameters]
order = 3
"""

# (name, spec text, field named in the error, words the message must contain)
CASES = [
    ("empty", "", "", "empty"),
    ("whitespace", "   \n\n", "", "empty"),
    ("not_toml", "layout = \n degree 3", "", "not valid TOML"),
    ("missing_layout", GOOD.replace('layout = "sequence"', ""), "layout", "missing field"),
    ("missing_degree", GOOD.replace("degree = 2", ""), "degree", "missing field"),
    ("missing_token", GOOD.replace('token = { op = "identity" }', ""), "branch[2].token",
     "missing field"),
    ("missing_op", GOOD.replace('{ op = "dwconv1d", kernel = 3 }', "{ kernel = 3 }"),
     "branch[1].token.op", "missing field"),
    ("degree_string", GOOD.replace("degree = 2", 'degree = "two"'), "degree", "expected int"),
    ("kernel_float", GOOD.replace("kernel = 3", "kernel = 3.5"), "branch[1].token.kernel",
     "expected int"),
    ("bias_string", GOOD.replace('op = "dense" }', 'op = "dense", bias = "yes" }', 1),
     "branch[1].channel.bias", "expected bool"),
    ("unknown_op", GOOD.replace("dwconv1d", "dwconv1"), "branch[1].token.op",
     "did you mean 'dwconv1d'"),
    ("unknown_channel_op", GOOD.replace('op = "dense" }', 'op = "dens" }', 1),
     "branch[1].channel.op", "did you mean 'dense'"),
    ("code_in_field", GOOD.replace('"dwconv1d"', '"__import__(\'os\').system(\'true\')"'),
     "branch[1].token.op", "unknown token operator"),
    ("even_kernel", GOOD.replace("kernel = 3", "kernel = 4"), "branch[1].token.kernel",
     "odd"),
    ("zero_kernel", GOOD.replace("kernel = 3", "kernel = 0"), "branch[1].token.kernel",
     "positive"),
    ("negative_kernel", GOOD.replace("kernel = 3", "kernel = -3"), "branch[1].token.kernel",
     "positive"),
    ("degree_mismatch", GOOD.replace("degree = 2", "degree = 3"), "branch",
     "degree = 3 but 2 [[branch]] tables"),
    ("degree_zero", GOOD.replace("degree = 2", "degree = 0"), "degree", "at least 1"),
    ("2d_op_in_sequence", GOOD.replace('{ op = "dwconv1d", kernel = 3 }',
                                       '{ op = "dwconv2d", kernel = 3 }'),
     "branch[1].token.op", "grid2d operator"),
    ("1d_op_in_grid", GOOD.replace('"sequence"', '"grid2d"'), "branch[1].token.op",
     "sequence operator"),
    ("nan", GOOD + '\n[[normalize]]\nat = "Y1"\nkind = "l1_tokens"\neps = nan\n',
     "normalize[1].eps", "non-finite"),
    ("inf", GOOD.replace("[[branch]]\nchannel = { op = \"dense\" }\ntoken = { op = \"identity\" }",
                         "[[branch]]\nchannel = { op = \"dense\" }\ntoken = { op = \"identity\" }"
                         "\nactivation = { fn = \"gelu\", order = 4, range = [-inf, 4] }"),
     "branch[2].activation.range[0]", "non-finite"),
    ("widths_do_not_compose",
     GOOD.replace('channel = { op = "dense" }\ntoken = { op = "identity" }',
                  'channel = { op = "dense", out = 7 }\ntoken = { op = "identity" }'),
     "branch[2] (its product with Z1)", "channel sizes do not compose"),  # no [[mix]]: was
    # reported at mix[1], which the spec does not have
    ("expand_vs_plain", GOOD.replace('channel = { op = "dense" }\ntoken = { op = "dwconv1d"',
                                     'channel = [{ op = "dense" }, { op = "expand" }]\n'
                                     'token = { op = "dwconv1d"'),
     "branch[2] (its product with Z1)", "channel sizes do not compose"),
    ("unknown_top_field", "degre = 3\n" + GOOD, "degre", "did you mean 'degree'"),
    ("unknown_attr", GOOD.replace("kernel = 3", "kernel = 3, kernal = 5"),
     "branch[1].token.kernal", "unknown attribute"),
    ("unknown_layout", GOOD.replace('"sequence"', '"sequense"'), "layout",
     "did you mean 'sequence'"),
    ("shared_name", GOOD.replace('op = "dense" }', 'op = "dense", name = "w" }'),
     "branch[2].channel", "'w' also names branch[1].channel"),
    ("bad_terms", GOOD + "\n[output]\nterms = [3]\n", "output.terms", "distinct degrees"),
    ("bad_weights", GOOD + '\n[output]\nweights = "dense"\n', "output.weights",
     "unknown weighting"),
    ("bad_surrogate_fn", GOOD.replace('token = { op = "identity" }',
                                      'token = { op = "identity" }\n'
                                      'activation = { fn = "tanh", order = 4, range = [-1, 1] }'),
     "branch[2].activation.fn", "unknown function"),
    ("dsl_keyword_as_attribute", GOOD.replace("kernel = 3", "kernel = 3, field = 1"),
     "branch[1].token.field", "unknown attribute"),
    ("input_name_as_attribute", GOOD.replace("kernel = 3", "kernel = 3, x = 1"),
     "branch[1].token.x", "unknown attribute"),
    ("label_as_attribute", GOOD.replace("kernel = 3", "kernel = 3, label = 3"),
     "branch[1].token.label", "unknown attribute"),
    ("hook_label", GOOD + '\n[[normalize]]\nat = "Y1"\nkind = "l1_tokens"\nlabel = "q"\n',
     "normalize[1].label", "unknown field"),
    ("hook_name", GOOD + '\n[[normalize]]\nat = "Y1"\nkind = "l1_tokens"\nname = "q"\n',
     "normalize[1].name", "unknown field"),
    ("huge_kernel", GOOD.replace("kernel = 3", "kernel = 4611686018427387905"),
     "branch[1].token.kernel", "at most 1,048,576"),
    ("huge_out", GOOD.replace('op = "dense" }', 'op = "dense", out = 4611686018427387904 }', 1),
     "branch[1].channel.out", "at most 1,048,576"),
    ("bad_init", GOOD.replace('op = "dense" }', 'op = "dense", bias = true, init = { bias = '
                              '[-2, -7] } }', 1), "branch[1].channel.init.bias",
     "not an interval"),
    ("bad_hook_target", GOOD + '\n[[normalize]]\nat = "Y9"\nkind = "l1_tokens"\n',
     "normalize[1].at", "unknown target"),
    ("bad_hook_kind", GOOD + '\n[[normalize]]\nat = "Y1"\nkind = "softmax"\n',
     "normalize[1].kind", "must be one of"),
    ("mix_count", GOOD + '\n[[mix]]\ntoken = "identity"\n[[mix]]\ntoken = "identity"\n',
     "mix", "needs 1 [[mix]]"),
    ("output_not_dim", GOOD + '\n[output]\nprojection = { op = "dense", out = 5 }\n',
     "output.projection", "not D"),
    ("unknown_family", FAMILY.replace('"hyena"', '"hyenna"'), "family",
     "did you mean 'hyena'"),
    ("unknown_parameter", FAMILY.replace("order = 3", "ordr = 3"), "parameters.ordr",
     "did you mean 'order'"),
    ("parameter_type", FAMILY.replace("order = 3", 'order = "3"'), "parameters.order",
     "expected an integer"),
    ("parameter_range", FAMILY.replace("order = 3", "order = 0"), "parameters.order",
     "below the minimum"),
    ("parameter_choice", 'family = "castling_vit"\n[parameters]\nvariant = "exact"\n',
     "parameters.variant", "use one of: released, exact_kernel"),
    ("parameter_pair", 'family = "mamba_selective"\n[parameters]\nsoftplus_range = [1, -1]\n',
     "parameters.softplus_range", "lo < hi"),
    ("family_and_branches", FAMILY + GOOD.replace('layout = "sequence"\ndegree = 2\n', ""),
     "branch", "takes its structure from family 'hyena'"),
    ("parameters_without_family", GOOD + "\n[parameters]\norder = 3\n", "parameters",
     "without a family"),
    ("family_not_a_string", FAMILY.replace('"hyena"', "3"), "family", "expected str"),
    ("parameters_not_a_table", 'family = "hyena"\nparameters = 3\n', "parameters",
     "expected table"),
    ("surrogate_overflow", GOOD.replace('token = { op = "identity" }',
                                        'token = { op = "identity" }\nactivation = { fn = '
                                        '"exp", order = 8, range = [-1000, 1000] }'),
     "branch[2].activation.range", "exp overflows float64 on [-1000.0, 1000.0]"),
    ("spec_name", 'name = "1 weird/na me"\n' + GOOD, "name", "not a name generated code"),
    ("empty_name", 'name = ""\n' + GOOD, "name", "not a name generated code"),
    ("family_spec_name", 'name = "x-y"\n' + FAMILY, "name", "not a name generated code"),
    ("op_name", GOOD.replace('{ op = "dense" }', '{ op = "dense", name = "a b-c" }', 1),
     "branch[1].channel.name", "op name 'a b-c' is not a name"),
    ("empty_op_name", GOOD.replace('{ op = "dense" }', '{ op = "dense", name = "" }', 1),
     "branch[1].channel.name", "op name '' is not a name"),  # was taken for no name
    ("negative_eps", GOOD + '\n[[normalize]]\nat = "Y1"\nkind = "l1_tokens"\neps = -1.0\n',
     "normalize[1].eps", "must be >= 0"),
    # a fixed width that no D splits into the heads: refused here, not by compile's advice to
    # "use a dim divisible by 2", which no dim satisfies
    ("fixed_width_heads", GOOD.replace('channel = { op = "dense" }', 'channel = [{ op = "dense", '
                                       'out = 3 }, { op = "expand", heads = 2 }, { op = '
                                       '"contract", heads = 2 }, { op = "dense", out = "dim" }]',
                                       1),
     "branch[1].channel[1]", "the input has 3 channels at every model width"),
]


@pytest.mark.parametrize(("name", "text", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_spec_error_names_file_and_field(tmp_path: Path, name: str, text: str, field: str,
                                            words: str) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert err.source == str(path)
    assert err.field == field, str(err)
    assert words in str(err), str(err)
    assert str(path) in str(err)


def test_good_spec_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    assert load_spec(path).degree == 2


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(SpecError, match="did you mean 'padre3'"):
        load_spec("padre4")
    with pytest.raises(SpecError, match="file not found"):
        load_spec("/nonexistent/x.toml")


def test_a_python_spec_given_to_the_loader_says_how_to_compile_it(tmp_path: Path) -> None:
    """`padre compile my_spec.py` (a DSL spec, which the README shows beside TOML) had been
    told only to fix its TOML syntax."""
    (tmp_path / "gated.py").write_text("from padre_compiler import dsl\n")
    with pytest.raises(SpecError, match="not valid TOML") as err:
        load_spec(tmp_path / "gated.py")
    assert "padre_compiler.compile(spec" in err.value.fix
    (tmp_path / "typo.toml").write_text("layout = \n")
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "typo.toml")
    assert "padre_compiler.compile" not in err.value.fix


def test_unreadable_files_say_why(tmp_path: Path, monkeypatch) -> None:
    """A byte-order mark, bytes that are not UTF-8 and a folder each get their own error and
    fix (a BOM read as 'not valid TOML' at line 1; a folder as errno 21); a folder named like
    a bundled spec, such as `-o padre3/module.py` creates, no longer hides that spec."""
    (tmp_path / "bom.toml").write_bytes(b'\xef\xbb\xbfname = "x"\n')
    (tmp_path / "latin.toml").write_bytes(b'name = "\xff"\n')
    (tmp_path / "folder.toml").mkdir()
    for name, message, fix in (("bom.toml", "byte-order mark", "without a BOM"),
                               ("latin.toml", "not UTF-8 text", "save the spec as UTF-8"),
                               ("folder.toml", "is a folder", "path of a .toml file")):
        with pytest.raises(SpecError, match=message) as err:
            load_spec(tmp_path / name)
        assert fix in err.value.fix and str(tmp_path / name) in str(err.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "padre3").mkdir()
    (tmp_path / "mine").mkdir()
    assert load_spec("padre3").name == "padre3"
    for given in ("./padre3", "mine"):  # a path, or a name no spec has: the folder's error
        with pytest.raises(SpecError, match="is a folder"):
            load_spec(given)


@pytest.mark.parametrize("name", ["empty", "unknown_op", "even_kernel", "widths_do_not_compose",
                                  "parameter_pair"])
def test_cli_exits_2_without_traceback_and_writes_nothing(tmp_path: Path, name: str) -> None:
    text = next(c[1] for c in CASES if c[0] == name)
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    out = tmp_path / "out.py"
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", str(spec),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert str(spec) in proc.stderr
    assert not out.exists()


def test_cli_bad_argument_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", "padre3",
                           "--grid", "14by14"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "expected HxW" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_param_exits_2_naming_it() -> None:
    for args, words in ((["castling_vit", "--param", "variant=exact"], "--param variant"),
                        (["padre3", "--param", "order=3"], "no parameters to set"),
                        (["hyena", "--param", "order"], "expected KEY=VALUE")):
        proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr


def test_a_contract_whose_width_is_not_heads_times_times_is_refused(tmp_path) -> None:
    """Checked as the width is resolved, with the op named (it was a numpy reshape error): a
    width that depends on D when the spec is compiled, a fixed one when it is loaded (no D
    makes 6 channels split into 2 heads of 6 copies)."""
    from padre_compiler.compiler import compile as compile_spec
    from padre_compiler.errors import ShapeError

    spec = tmp_path / "bad.toml"
    text = ('layout = "sequence"\ndegree = 2\n[[branch]]\nchannel = [{ op = "dense", '
            'name = "a", out = OUT }, { op = "contract", heads = 2, times = 6 }, '
            '{ op = "dense", name = "b", out = "dim" }]\ntoken = "identity"\n'
            '[[branch]]\nchannel = { op = "dense", name = "c" }\ntoken = "identity"\n')
    spec.write_text(text.replace("OUT", '"dim"'))
    with pytest.raises(ShapeError, match=r"contract .*width 4 at dim=4 is not heads \* times"):
        compile_spec(spec, dim=4)
    spec.write_text(text.replace("OUT", "6"))
    with pytest.raises(SpecError, match=r"heads=2 times times=6, but the input has 6 channels "
                                        r"at every model width") as info:
        load_spec(spec)
    assert info.value.field == "branch[1].channel[1]"


def test_an_op_table_sets_init_ranges(tmp_path) -> None:
    """init = { role = [lo, hi] } in TOML, as dsl's init=: that parameter starts uniform on it."""
    path = tmp_path / "init.toml"
    path.write_text(GOOD.replace('op = "dense" }', 'op = "dense", bias = true, init = { bias = '
                                 '[-7, -2] } }', 1))
    decls = load_spec(path).param_decls()
    assert [d.init_range for d in decls.values() if d.init_range] == [(-7.0, -2.0)]


@pytest.mark.parametrize("nested", ["description = " + "[" * 3000 + "]" * 3000,
                                    "x = " + "{a=" * 3000 + "1" + "}" * 3000])
def test_a_spec_nested_too_deeply_is_a_spec_error(tmp_path: Path, nested: str) -> None:
    """tomllib (and the finiteness check) recurse per level: 3,000 brackets were a
    RecursionError traceback, exit 1."""
    spec = tmp_path / "deep.toml"
    spec.write_text(nested + "\n")
    with pytest.raises(SpecError, match="nested too deeply to read"):
        load_spec(spec)
    out = tmp_path / "out.py"
    proc = subprocess.run([sys.executable, "-m", "padre_compiler.cli", "compile", str(spec),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "nested too deeply" in proc.stderr and not out.exists()
