"""How many SMS messages repeat, and how many test messages the model already saw in training; prints markdown.

    python benchmarks/duplicate_table.py                          # the chapter's split (seed 123) and --dedupe
    python benchmarks/duplicate_table.py --seeds 123,124,125,126,127   # the leak under other seeds' splits too
    python benchmarks/duplicate_table.py --classifier outputs          # also a saved classifier's accuracy on
                                                                        # the leaked and the clean test messages

Uses the real SMS data ($SMS_SPAM_ZIP, data/'s download, or --data). "Exact": the same text; "normalised": the
same text up to case and spacing (beyond/duplicates.py).
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import spam_dataset  # after the sys.path line, so the script runs from anywhere
from beyond import data_splits, own_data
from beyond.baseline import fit_tfidf_baseline
from beyond.checkpoints import load_classifier
from beyond.duplicates import count_distinct, duplicate_report, leaked_and_clean_accuracy
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from beyond.intervals import format_accuracy
from beyond.prediction import class_probabilities
from beyond.seeds import parse_seeds


def split_row(data_path, work, seed, dedupe):
    """One markdown line: a split's sizes, repeats within, and test messages also in train/validation."""
    splits = data_splits.prepare_spam_splits(data_path, Path(work) / f"{seed}-{dedupe}", seed=seed, dedupe=dedupe,
                                              verbose=False)
    report = duplicate_report(splits["train"], splits["validation"], splits["test"])
    leaked, exact, normalised = report["leaked_test"], report["exact"], report["normalised"]
    rows = splits["num_rows"]
    return (f"| {'--dedupe' if dedupe else 'chapter'} | {seed} | {rows['train']}/{rows['validation']}/{rows['test']} | "
            f"{exact['within']['train']}/{exact['within']['validation']}/{exact['within']['test']} | "
            f"{exact['validation_in_train']} | {len(leaked)} ({int((leaked['Label'] == 1).sum())} spam) | "
            f"{normalised['test_in_train_or_validation']} |")


def leaked_and_clean_line(data_path, work, classifier=None):
    """A model's accuracy on the chapter's leaked and clean test messages (does the leak flatter it?): the TF-IDF
    baseline, or a saved classifier trained on the chapter's split (seed 123)."""
    splits = data_splits.prepare_spam_splits(data_path, Path(work) / "baseline", verbose=False)
    train, test = (spam_dataset.read_split(splits[name]) for name in ("train", "test"))
    if classifier is None:
        name, predicted = "TF-IDF baseline", fit_tfidf_baseline(train["Text"], train["Label"]).predict(test["Text"])
    else:
        model, info = load_classifier(classifier)
        p_spam = class_probabilities(test["Text"].tolist(), model, get_gpt2_tokenizer(), "cpu", info["max_length"])
        name, predicted = f"classifier {classifier}", p_spam.argmax(dim=-1).numpy()
    right = predicted == test["Label"].to_numpy()
    parts = leaked_and_clean_accuracy(duplicate_report(splits["train"], splits["validation"], test), right)
    return (f"{name} on the chapter's test split: all {format_accuracy(right.sum(), len(right))}; leaked "
            f"{format_accuracy(parts['leaked']['correct'], parts['leaked']['total'])}; clean "
            f"{format_accuracy(parts['clean']['correct'], parts['clean']['total'])}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="the SMS data (default: $SMS_SPAM_ZIP, else data/'s download)")
    parser.add_argument("--seeds", type=parse_seeds, default=[123], help="split seeds (default 123, the chapter's)")
    parser.add_argument("--classifier", default=None,
                        help="a saved classifier (file or output folder) trained on the chapter's split, seed 123")
    args = parser.parse_args(argv)
    data_path = args.data or data_splits.find_local_sms_zip()
    if data_path is None:
        print("error: the SMS data was not found; pass --data PATH (the UCI zip or its TSV) or set SMS_SPAM_ZIP.",
              file=sys.stderr)
        return 1
    counts = count_distinct(own_data.load_spam_dataframe(data_path))
    print("| | rows | distinct texts | distinct ignoring case and spacing |\n| --- | --- | --- | --- |")
    print(f"| all messages | {counts['rows']} | {counts['distinct']} | {counts['distinct_normalised']} |")
    print(f"| spam | {counts['spam_rows']} | {counts['distinct_spam']} | {counts['distinct_spam_normalised']} |\n")
    print("| split | seed | train/val/test rows | repeats within train/val/test | val in train | "
          "test in train or val (exact) | same, ignoring case and spacing |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as work:
        for dedupe in (False, True):
            for seed in args.seeds:
                print(split_row(data_path, work, seed, dedupe))
        print("\n" + leaked_and_clean_line(data_path, work))
        if args.classifier:
            print(leaked_and_clean_line(data_path, work, args.classifier))
    return 0


if __name__ == "__main__":
    sys.exit(main())
