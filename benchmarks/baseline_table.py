"""An honest baseline: TF-IDF + logistic regression beside GPT-2 under two protocols; prints markdown tables.

    python benchmarks/baseline_table.py                       # baseline rows + the tiny test-mode GPT
    python benchmarks/baseline_table.py --gpt2-small-random   # also GPT-2 small's shape, random weights
                                                              # (about 3 minutes on 2 CPU cores, chapter protocol)
    python benchmarks/baseline_table.py --protocol cv5        # only the cross-validation table

Protocol "chapter": its balanced 70/10/20 split, test accuracy with its count and 95% Wilson interval.
Protocol "cv5": 5-fold stratified cross-validation on every distinct message, unbalanced (beyond/cross_validation.py),
the literature's usual protocol: accuracy, spam precision, recall, F1 and PR-AUC over all folds pooled.

Every measured row uses the real SMS data ($SMS_SPAM_ZIP, data/'s download, or --data) and the chapter's balanced 70/10/20
split (prepare_spam_splits, the same rows train_classifier.py uses); "full data" rows skip the balancing.
Pretrained GPT-2 cannot be measured here (no weights, no network): its row quotes the chapter.
"""

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from beyond import data_splits, gpt2_tokenizer, look_inside  # after the sys.path line: runs from anywhere
from beyond.baseline import fit_tfidf_baseline
from beyond.checkpoints import load_classifier
from beyond.cross_validation import cross_validate, load_all_messages, tfidf_spam_probabilities
from beyond.intervals import format_accuracy

CHAPTER_TEST_ACCURACY = 0.9567  # GPT-2 small, pretrained, the chapter's settings (the book's figure)
CHAPTER_TEST_COUNT = (287, 300)  # the same figure as a count: 95.67% of the 300 test messages


def read_split(paths):
    """{split: (texts, labels)} from prepare_spam_splits' CSVs."""
    frames = {name: pd.read_csv(paths[name]) for name in ("train", "validation", "test")}
    return {name: (df["Text"].astype(str).tolist(), df["Label"].tolist()) for name, df in frames.items()}


def messages_per_second(predict, texts, repeats=3):
    """Best of a few timed runs of predict(texts), as messages per second."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def baseline_row(name, data, seed=123):
    """Fit the TF-IDF baseline on data["train"] and measure it on validation and test."""
    start = time.perf_counter()
    model = fit_tfidf_baseline(*data["train"], seed=seed)
    seconds = time.perf_counter() - start
    test_texts, test_labels = data["test"]
    predicted = model.predict(test_texts)
    return {"model": name, "val_acc": accuracy_score(data["validation"][1], model.predict(data["validation"][0])),
            "test_acc": accuracy_score(test_labels, predicted), "test_f1": f1_score(test_labels, predicted),
            "test_count": (int((predicted == test_labels).sum()), len(test_labels)),
            "train_seconds": seconds, "per_second": messages_per_second(model.predict_proba, test_texts)}


def gpt_row(name, flags, data_path, work_dir, data):
    """Train with train_classifier.py (flags pick the model), then time P(spam) on the test messages."""
    out = Path(work_dir) / name.replace(" ", "_").replace(",", "")
    command = [sys.executable, str(REPO / "train_classifier.py"), "--data", str(data_path), "--data-dir",
               str(Path(work_dir) / "data"), "--output-dir", str(out), *flags]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    test = metrics["classification_metrics"]["test"]
    counts = metrics["accuracy_intervals"]["test"]
    model, info = load_classifier(out)
    tokenizer = gpt2_tokenizer.get_gpt2_tokenizer()
    max_length = info["max_length"]
    texts = data["test"][0][:64]  # enough for a steady speed; the whole split takes long for GPT-2 small

    def predict(batch):
        rows = [look_inside.encode_message(t, tokenizer, max_length) for t in batch]
        return look_inside.spam_probabilities(model, rows)

    return {"model": name, "val_acc": metrics["val_accuracy"], "test_acc": metrics["test_accuracy"],
            "test_count": (counts["correct"], counts["total"]), "test_f1": test["f1"], "train_seconds": metrics["training_seconds"],
            "per_second": messages_per_second(predict, texts, repeats=1)}


def markdown(rows):
    """The table: one line per row, '-' where a figure is not measured or not published."""
    def pct(value):
        return "-" if value is None else f"{value * 100:.2f}%"

    lines = [("| model | what this row is | val acc | test acc (count, 95% CI) | test F1 (spam) | training time | "
              "prediction speed |"),
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        train = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.2f} s"
        speed = "-" if r.get("per_second") is None else f"{r['per_second']:,.0f} msg/s"
        test = format_accuracy(*r["test_count"]) if r.get("test_count") else pct(r.get("test_acc"))
        lines.append(f"| {r['model']} | {r['note']} | {pct(r.get('val_acc'))} | {test} | "
                     f"{pct(r.get('test_f1'))} | {train} | {speed} |")
    return "\n".join(lines)


def cv5_rows(data_path, work, gpt_runs):
    """The cv5 protocol's pooled scores: the baseline here, each GPT through train_classifier.py --protocol cv5."""
    messages, _ = load_all_messages(data_path, offline=True)
    rows = [{"model": "TF-IDF + logistic regression", **cross_validate(messages, tfidf_spam_probabilities)["overall"]}]
    for name, flags in gpt_runs:
        out = Path(work) / ("cv5_" + name.replace(" ", "_").replace(",", ""))
        command = [sys.executable, str(REPO / "train_classifier.py"), "--protocol", "cv5", "--data", str(data_path),
                   "--data-dir", str(Path(work) / "data"), "--output-dir", str(out), *flags]
        print("$", " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        models = json.loads((out / "cv5.json").read_text(encoding="utf-8"))["models"]
        gpt = next(result for model, result in models.items() if not model.startswith("TF-IDF"))
        rows.append({"model": name, **gpt["overall"], "seconds": time.perf_counter() - start})
    return rows, len(messages), int(messages["Label"].sum())


def cv5_markdown(rows):
    """The cv5 table: pooled accuracy (count, 95% CI), spam precision, recall, F1, PR-AUC, wall time."""
    lines = ["| model | accuracy (count, 95% CI) | spam precision | spam recall | spam F1 | PR-AUC | wall time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        seconds = f"{r['seconds']:.0f} s" if "seconds" in r else "-"
        lines.append(f"| {r['model']} | {format_accuracy(r['correct'], r['total'])} | " + " | ".join(
            f"{r[k] * 100:.2f}%" for k in ("precision", "recall", "f1", "pr_auc")) + f" | {seconds} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="the SMS data (default: $SMS_SPAM_ZIP, else data/'s download)")
    parser.add_argument("--gpt2-small-random", action="store_true",
                        help="also train GPT-2 small's shape with random weights (minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for the prediction timings (default 1: on a shared machine more threads "
                             "spin idle and cost more than they save)")
    parser.add_argument("--no-gpt", action="store_true", help="baseline rows only")
    parser.add_argument("--protocol", choices=("chapter", "cv5", "both"), default="both",
                        help="which table: the chapter's split, 5-fold cross-validation, or both (default)")
    parser.add_argument("--work-dir", default=None,
                        help="keep the splits and the GPT runs' output folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    data_path = args.data or data_splits.find_local_sms_zip()
    if data_path is None:
        print("error: the SMS data was not found; pass --data PATH (the UCI zip or its TSV) or set SMS_SPAM_ZIP.",
              file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)  # numpy's BLAS too (the baseline's predict_proba)
    with (contextlib.nullcontext(args.work_dir) if args.work_dir else tempfile.TemporaryDirectory()) as work:
        if args.protocol != "chapter":
            gpt_runs = [] if args.no_gpt else [("tiny random GPT", ["--test-mode", "--lr", "1e-3"])]
            if args.gpt2_small_random:
                gpt_runs.append(("GPT-2 small shape, random weights", ["--weights", "random", "--model-size", "124M",
                                                                        "--precision", "bf16"]))
            cv_rows, num_messages, num_spam = cv5_rows(data_path, work, gpt_runs)
        if args.protocol == "cv5":
            print(f"\nProtocol cv5: {num_messages} distinct messages ({num_spam} spam), 5 stratified folds, seed 123; "
                  "scores over all folds' predictions pooled.\n")
            print(cv5_markdown(cv_rows))
            return 0
        balanced = read_split(data_splits.prepare_spam_splits(data_path, Path(work) / "balanced", verbose=False))
        full = read_split(data_splits.prepare_spam_splits(data_path, Path(work) / "full", balance=False,
                                                           verbose=False))
        rows = [{"model": "GPT-2 small, pretrained", "note": "the chapter's published figure (not run here)",
                 "test_acc": CHAPTER_TEST_ACCURACY, "test_count": CHAPTER_TEST_COUNT},
                {**baseline_row("TF-IDF + logistic regression", balanced), "note": "measured, balanced split"},
                {**baseline_row("TF-IDF + logistic regression", full),
                 "note": f"measured, full unbalanced data ({1 - sum(full['test'][1]) / len(full['test'][1]):.0%} "
                         "ham in its test split), 70/10/20"}]
        if not args.no_gpt:
            rows.append({**gpt_row("tiny random GPT", ["--test-mode", "--num-epochs", "5", "--lr", "1e-3"],
                                   data_path, work, balanced),
                         "note": "measured: test-mode model (2 blocks, 32 dims), 5 epochs, lr 1e-3, balanced split"})
        if args.gpt2_small_random:
            rows.append({**gpt_row("GPT-2 small shape, random weights",
                                   ["--weights", "random", "--model-size", "124M"], data_path, work, balanced),
                         "note": "measured: random trunk, last block + head trained (chapter settings); "
                                 "its cost equals the pretrained model's, its accuracy does not"})
    print(f"\nSMS data {data_path}; CPU, {torch.get_num_threads()} threads; prediction speed: P(spam) of test "
          "messages (GPT rows: 64 messages padded to the training length, batches of 32).\n")
    print(markdown(rows))
    if args.protocol == "both":
        print(f"\nProtocol cv5: {num_messages} distinct messages ({num_spam} spam), 5 stratified folds, seed 123; "
              "scores over all folds' predictions pooled (GPT rows: 5 epochs each fold).\n")
        print(cv5_markdown(cv_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
