"""Re-run the chapter's bonus-experiment table (ch06 "additional experiments") with train_classifier.py's switches.

Each row is one `train_classifier.py` run: the bonus experiments' switch-aware loop (beyond/bonus_training.py),
or the fast trainer where it gives that loop's numbers; the script writes a markdown table like the chapter's to
benchmarks/results/bonus_table.md (and the raw numbers to bonus_table.json).

    python benchmarks/bonus_table.py                   # test mode: the tiny random GPT on the real SMS data
    python benchmarks/bonus_table.py --rows 1 3 11     # only some rows
    python benchmarks/bonus_table.py --seeds 123,124,125,126,127   # each row over 5 seeds: mean ± sd
    python benchmarks/bonus_table.py --gpt2-small-random --num-epochs 1   # GPT-2 small's shape, random weights
                                                       # (no download; hours on a laptop CPU, minutes on a GPU)

In test mode the numbers show how the switches behave, not what GPT-2 reaches: the tiny model starts from
random weights, so "pretrained" rows are random too and the model-size rows (6-9, 12) cannot run.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beyond import cli  # after the sys.path line, so the script runs from anywhere
from beyond.seeds import parse_seeds, summarise

# The chapter's rows: (number, model, weights, token position, trainable layers, context length, flags).
# Facts (row numbers and settings) from the chapter's bonus table; rows needing other GPT-2 sizes are marked.
ROWS = [
    (1, "gpt2-small (124M)", "pretrained", "last", "last_block", "longest train ex. (120)", []),
    (2, "gpt2-small (124M)", "pretrained", "first", "last_block", "longest train ex. (120)",
     ["--trainable-token-pos", "first"]),
    (3, "gpt2-small (124M)", "pretrained", "last", "last_layer", "longest train ex. (120)",
     ["--trainable-layers", "last_layer"]),
    (4, "gpt2-small (124M)", "pretrained", "last", "last_two_blocks", "longest train ex. (120)",
     ["--trainable-layers", "last_two_blocks"]),
    (5, "gpt2-small (124M)", "pretrained", "last", "all", "longest train ex. (120)",
     ["--trainable-layers", "all"]),
    (6, "gpt2-medium (355M)", "pretrained", "last", "last_block", "longest train ex. (120)",
     ["--model-size", "gpt2-medium (355M)"]),
    (7, "gpt2-large (774M)", "pretrained", "last", "last_block", "longest train ex. (120)",
     ["--model-size", "gpt2-large (774M)"]),
    (8, "gpt2-xl (1558M)", "pretrained", "last", "last_block", "longest train ex. (120)",
     ["--model-size", "gpt2-xl (1558M)"]),
    (9, "gpt2-xl (1558M)", "pretrained", "last", "all", "longest train ex. (120)",
     ["--model-size", "gpt2-xl (1558M)", "--trainable-layers", "all"]),
    (10, "gpt2-small (124M)", "random", "last", "all", "longest train ex. (120)",
     ["--weights", "random", "--trainable-layers", "all"]),
    (11, "gpt2-small (124M)", "pretrained", "last", "LoRA", "longest train ex. (120)",
     ["--trainable-layers", "lora", "--lora-rank", "16", "--lora-alpha", "16"]),
    (12, "gpt2-xl (1558M)", "pretrained", "last", "LoRA", "longest train ex. (120)",
     ["--model-size", "gpt2-xl (1558M)", "--trainable-layers", "lora", "--lora-rank", "16", "--lora-alpha", "16"]),
    (13, "gpt2-small (124M)", "pretrained", "last", "last_block", "context length (1024)",
     ["--context-length", "model_context_length"]),
    (14, "gpt2-small (124M)", "pretrained", "last", "last_block", "variable: no padding (batch size 1)",
     ["--no-padding"]),
    (15, "gpt2-small (124M)", "pretrained", "last", "last_block", "variable: no padding (batch size 8)",
     ["--no-padding", "--accumulation-steps", "8"]),
    (16, "gpt2-small (124M)", "pretrained", "flexible (last non-padding position)", "last_block",
     "longest train ex. (120)", ["--trainable-token-pos", "flexible"]),
    (17, "gpt2-small (124M)", "pretrained", "last", "last_block", "longest train ex. (120); but no causal mask",
     ["--disable-causal-mask"]),
    (18, "gpt2-small (124M)", "pretrained", "last", "last_block",
     "longest train ex. (120) and `ignore_index` for padding", ["--ignore-index", "50256"]),
    (19, "gpt2-small (124M)", "pretrained", "last + pooled embeddings (every position, padding included)",
     "last_block", "longest train ex. (120)", ["--average-embeddings"]),
]
OTHER_SIZES = {6, 7, 8, 9, 12}  # need GPT-2 medium/large/xl: not runnable in test mode


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", help="row numbers to run (default: every feasible row)")
    parser.add_argument("--num-epochs", type=int, default=5, help="epochs per row (chapter: 5)")
    parser.add_argument("--lr", type=float, default=5e-5,
                        help="learning rate (chapter: 5e-5; the tiny random model learns visibly only with ~1e-3)")
    parser.add_argument("--data", default=None,
                        help="the SMS data (default: $SMS_SPAM_ZIP or a download in the data folder, else synthetic)")
    parser.add_argument("--gpt2-small-random", action="store_true",
                        help="GPT-2 small's shape with random weights instead of the tiny test-mode model")
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--seeds", type=parse_seeds, default=None,
                        help="run each row once per seed, e.g. 123,124,125 (split and head change): mean ± sd")
    return parser.parse_args(argv)


def run_row(row, args, results_dir, seed=None):
    """One train_classifier.py run for a table row; returns the numbers for its table line."""
    number, flags = row[0], row[6] + ([] if seed is None else ["--seed", str(seed)])
    out = results_dir / "runs" / f"row{number:02d}" / ("" if seed is None else f"seed-{seed}")
    cli_args = ["--data-dir", str(results_dir / "data"), "--output-dir", str(out), "--num-epochs", str(args.num_epochs),
           "--lr", str(args.lr)]
    if args.data:
        cli_args += ["--data", args.data]
    if args.gpt2_small_random:
        cli_args += ["--weights", "random", "--model-size", "gpt2-small (124M)"]
    else:
        cli_args += ["--test-mode"]
    start = time.time()
    code = cli.main(cli_args + flags)
    seconds = time.time() - start
    if code != 0:
        return {"row": number, "error": f"exit code {code}", "seconds": seconds}
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {"row": number, "train_acc": metrics["train_accuracy"], "val_acc": metrics["val_accuracy"],
            "test_acc": metrics["test_accuracy"], "training_seconds": metrics["training_seconds"],
            "seconds": seconds, "trainer": metrics["settings"]["trainer"],
            "test_f1": metrics.get("classification_metrics", {}).get("test", {}).get("f1")}


def run_row_over_seeds(row, args, results_dir):
    """run_row once per --seeds seed; its table line then shows the test accuracy's mean ± sd."""
    runs = [run_row(row, args, results_dir, seed) for seed in args.seeds]
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "seconds": sum(r["seconds"] for r in runs)}
    mean = {key: summarise([r[key] for r in runs])["mean"] for key in ("train_acc", "val_acc", "training_seconds")}
    f1 = None if None in [r["test_f1"] for r in runs] else summarise([r["test_f1"] for r in runs])["mean"]
    return {**runs[0], **mean, "test_f1": f1, "seconds": sum(r["seconds"] for r in runs),
            "test_acc": summarise([r["test_acc"] for r in runs]), "seeds": list(args.seeds)}


def markdown_table(rows, results, args):
    """The chapter's columns, our numbers, and the wall time of each row."""
    model_note = "GPT-2 small shape, random weights" if args.gpt2_small_random else "tiny random GPT (test mode)"
    seeds = f"; mean ± sd over seeds {','.join(map(str, args.seeds))}" if args.seeds else ""
    lines = [(f"Model actually run: {model_note}; {args.num_epochs} epoch(s), lr {args.lr:g}{seeds}; CPU "
              f"({os.cpu_count()} cores); times are wall-clock seconds."), "",
             ("| | Model | Weights | Trainable token position | Trainable layers | Context length | "
              "Training acc | Validation acc | Test acc | Test F1 (spam) | Training time | Row time | Trainer |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        number, model, weights, token_pos, layers, context, _ = row
        r = results.get(number)
        head = f"| {number} | {model} | {weights} | {token_pos} | {layers} | {context} |"
        if r is None:
            lines.append(head + " not run | | | | | | |")
        elif "error" in r:
            lines.append(head + f" failed ({r['error']}) | | | | | {r['seconds']:.1f} s | |")
        else:
            f1 = "" if r["test_f1"] is None else f"{r['test_f1'] * 100:.2f}%"
            test = r["test_acc"]
            test = (f"{test['mean'] * 100:.2f}% ± {(test['sd'] or 0) * 100:.2f}" if isinstance(test, dict)
                    else f"{test * 100:.2f}%")
            lines.append(head + f" {r['train_acc'] * 100:.2f}% | {r['val_acc'] * 100:.2f}% | "
                         f"{test} | {f1} | {r['training_seconds']:.1f} s | "
                         f"{r['seconds']:.1f} s | {r['trainer']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(args.rows) if args.rows else {r[0] for r in ROWS} - OTHER_SIZES
    if not args.gpt2_small_random:
        skipped = sorted(wanted & OTHER_SIZES)
        if skipped:
            print(f"Skipping rows {skipped}: they need GPT-2 medium/large/xl, which test mode does not build.")
        wanted -= OTHER_SIZES
    rows = [r for r in ROWS if r[0] in wanted]
    results = {}
    for row in rows:
        print(f"\n=== row {row[0]}: {' '.join(row[6]) or '(the chapter settings)'} ===", flush=True)
        results[row[0]] = run_row_over_seeds(row, args, results_dir) if args.seeds else run_row(row, args, results_dir)
        print(f"=== row {row[0]} took {results[row[0]]['seconds']:.1f} s ===", flush=True)
    table = markdown_table(ROWS, results, args)
    for name, text in (("bonus_table.md", table), ("bonus_table.json", json.dumps(results, indent=2))):
        tmp = results_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, results_dir / name)
    print("\n" + table)
    print(f"Wrote {results_dir / 'bonus_table.md'}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
