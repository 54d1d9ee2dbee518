"""Duplicate messages: how many texts repeat, and which test messages the model already saw in training.

The SMS Spam Collection holds 5,572 rows but 5,169 distinct texts (653 of its 747 spam are distinct), so a
random split puts copies of some test messages into the training set: the test set is not all unseen.
"Exact" compares the texts as they are; "normalised" ignores case and runs of spaces (normalise_text).
"""

import numpy as np
import pandas as pd

from beyond.intervals import accuracy_record

SPLIT_NAMES = ("train", "validation", "test")


def normalise_text(text):
    """The text in lower case with every run of whitespace made one space: "Ok  lar" and "ok lar" match."""
    return " ".join(str(text).lower().split())


def drop_duplicate_texts(df):
    """df without rows whose normalised text came earlier (the first copy stays), index reset."""
    return df[~df["Text"].map(normalise_text).duplicated()].reset_index(drop=True)


def count_distinct(df, spam_label="spam"):
    """Rows and distinct texts (exact, normalised), overall and of the spam class: the data set's duplicates."""
    spam = df[df["Label"] == spam_label]
    return {"rows": len(df), "distinct": df["Text"].nunique(),
            "distinct_normalised": df["Text"].map(normalise_text).nunique(),
            "spam_rows": len(spam), "distinct_spam": spam["Text"].nunique(),
            "distinct_spam_normalised": spam["Text"].map(normalise_text).nunique()}


def _counts(splits, key):
    """Repeats inside each split, and rows of validation/test whose text is in an earlier split, under key."""
    texts = {name: splits[name]["Text"].map(key) for name in SPLIT_NAMES}
    within = {name: int(texts[name].duplicated().sum()) for name in SPLIT_NAMES}
    validation_in_train = texts["validation"].isin(set(texts["train"]))
    test_in_earlier = texts["test"].isin(set(texts["train"]) | set(texts["validation"]))
    return {"within": within, "validation_in_train": int(validation_in_train.sum()),
            "test_in_train_or_validation": int(test_in_earlier.sum())}, test_in_earlier


def duplicate_report(train, validation, test):
    """Exact and normalised duplicates within and across the splits, and the leaked test rows as a DataFrame.

    Each split is a DataFrame with columns Label and Text (or a CSV path written by prepare_spam_splits).
    leaked_test: the test rows whose text (exact match) is also in train or validation, with in_train and
    in_validation columns saying where; leaked_mask: True for those rows, in the test split's order.
    """
    splits = {name: _as_frame(s) for name, s in zip(SPLIT_NAMES, (train, validation, test))}
    exact, leaked = _counts(splits, str)
    normalised, _ = _counts(splits, normalise_text)
    leaked_test = splits["test"][leaked].copy()
    leaked_test["in_train"] = leaked_test["Text"].isin(set(splits["train"]["Text"]))
    leaked_test["in_validation"] = leaked_test["Text"].isin(set(splits["validation"]["Text"]))
    return {"exact": exact, "normalised": normalised, "test_rows": len(splits["test"]),
            "leaked_test": leaked_test.reset_index(drop=True), "leaked_mask": leaked.to_numpy()}


def _as_frame(split):
    """A split as a DataFrame: itself, or read from its CSV."""
    return split if isinstance(split, pd.DataFrame) else pd.read_csv(split, dtype={"Text": str}, keep_default_na=False)


def format_duplicate_line(report, label_names=None):
    """One line for the training run: leaked test messages (by class), and repeats within the splits."""
    leaked = report["leaked_test"]
    by_class = leaked["Label"].value_counts().sort_index()
    names = list(label_names) if label_names else None
    classes = ", ".join(f"{n} {names[k] if names and 0 <= int(k) < len(names) else k}" for k, n in by_class.items())
    within = report["exact"]["within"]
    return (f"Duplicates: {len(leaked)} of {report['test_rows']} test messages also appear in train/validation"
            f"{' (' + classes + ')' if classes else ''}, {report['normalised']['test_in_train_or_validation']} "
            f"ignoring case and spacing; repeats within train/validation/test: "
            f"{within['train']}/{within['validation']}/{within['test']} (--dedupe drops them all)")


def leaked_and_clean_accuracy(report, right):
    """{"leaked", "clean": accuracy_record}: accuracy on the test messages seen in training and on the rest.

    right: one bool per test message, in the test split's order (prediction == label).
    """
    right, leaked = np.asarray(right, dtype=bool), report["leaked_mask"]
    if len(right) != len(leaked):
        raise ValueError(f"got {len(right)} answers for {len(leaked)} test messages; pass one per test message")
    return {"leaked": accuracy_record(right[leaked].sum(), leaked.sum()),
            "clean": accuracy_record(right[~leaked].sum(), (~leaked).sum())}
