"""Duplicates: the data set's repeats, the test messages leaked into training, and --dedupe removing them."""

import os

import pandas as pd
import pytest

import spam_dataset
from beyond import cli, data_splits, own_data, synthetic_data
from beyond.duplicates import (
    count_distinct,
    drop_duplicate_texts,
    duplicate_report,
    format_duplicate_line,
    leaked_and_clean_accuracy,
    normalise_text,
)

SMS_ZIP = os.environ.get("SMS_SPAM_ZIP", "")
needs_real_data = pytest.mark.skipif(not os.path.isfile(SMS_ZIP), reason="$SMS_SPAM_ZIP (the real SMS data) is not set")


def frame(*rows):
    return pd.DataFrame(rows, columns=["Label", "Text"])


def test_normalised_text_ignores_case_and_spacing_only():
    assert normalise_text("  Ok  LAR\n joking ") == normalise_text("ok lar joking") == "ok lar joking"
    assert normalise_text("ok lar.") != normalise_text("ok lar")


def test_report_counts_repeats_within_and_leaks_across_splits():
    train = frame((0, "see you"), (0, "see you"), (1, "WIN now"), (0, "home soon"))
    validation = frame((1, "WIN now"), (0, "new one"))
    test = frame((1, "win  NOW"), (0, "home soon"), (0, "new one"), (1, "fresh"), (1, "fresh"))
    report = duplicate_report(train, validation, test)
    assert report["exact"] == {"within": {"train": 1, "validation": 0, "test": 1}, "validation_in_train": 1,
                               "test_in_train_or_validation": 2}
    assert report["normalised"]["test_in_train_or_validation"] == 3  # "win  NOW" matches "WIN now" too
    leaked = report["leaked_test"]
    assert leaked["Text"].tolist() == ["home soon", "new one"]
    assert leaked["in_train"].tolist() == [True, False] and leaked["in_validation"].tolist() == [False, True]
    assert format_duplicate_line(report, ["ham", "spam"]).startswith(
        "Duplicates: 2 of 5 test messages also appear in train/validation (2 ham), 3 ignoring case and spacing")


def test_accuracy_on_the_leaked_and_the_clean_test_messages():
    train = frame((0, "see you"), (1, "WIN now"))
    test = frame((1, "WIN now"), (0, "home soon"), (0, "see you"), (1, "fresh"))
    report = duplicate_report(train, frame((0, "x")), test)
    assert report["leaked_mask"].tolist() == [True, False, True, False]
    parts = leaked_and_clean_accuracy(report, [True, False, True, True])
    assert (parts["leaked"]["correct"], parts["leaked"]["total"]) == (2, 2)
    assert (parts["clean"]["correct"], parts["clean"]["total"]) == (1, 2)
    with pytest.raises(ValueError, match="one per test message"):
        leaked_and_clean_accuracy(report, [True])


def test_drop_duplicate_texts_keeps_the_first_copy():
    df = frame((1, "WIN now"), (0, "hi"), (1, "win   now"), (0, "hi"))
    assert drop_duplicate_texts(df)["Text"].tolist() == ["WIN now", "hi"]


def test_prepare_spam_splits_dedupes_by_the_same_rule(tmp_path):
    texts = ["WIN now", "win   now", "Hi there", "hi there\n", "call me", "free prize", "FREE PRIZE", "later",
             "ok", "OK ", "lunch?", "prize draw"]
    df = frame(*[(("spam" if "win" in t.lower() or "prize" in t.lower() else "ham"), t) for t in texts])
    splits = data_splits.prepare_spam_splits(df, tmp_path, balance=False, dedupe=True, train_frac=1.0,
                                              validation_frac=0.0, verbose=False)
    kept = spam_dataset.read_split(splits["train"])
    assert sorted(kept["Text"]) == sorted(drop_duplicate_texts(df)["Text"])
    assert splits["deduplicated"] and splits["num_rows"]["used"] == 8


def test_seed_123_is_the_chapters_split_and_another_seed_another(tmp_path):
    df = synthetic_data.make_synthetic_spam_data(n_per_class=40)
    chapter = data_splits.prepare_spam_splits(df, tmp_path / "a", verbose=False)
    seeded = data_splits.prepare_spam_splits(df, tmp_path / "b", seed=123, verbose=False)
    other = data_splits.prepare_spam_splits(df, tmp_path / "c", seed=124, verbose=False)
    test = {name: pd.read_csv(s["test"]) for name, s in (("chapter", chapter), ("seeded", seeded), ("other", other))}
    assert test["chapter"].equals(test["seeded"])
    assert not test["chapter"].equals(test["other"]) and len(test["other"]) == len(test["chapter"])


@needs_real_data
def test_the_sms_collection_has_5169_distinct_texts_and_653_distinct_spam():
    counts = count_distinct(own_data.load_spam_dataframe(SMS_ZIP))
    assert (counts["rows"], counts["distinct"], counts["spam_rows"], counts["distinct_spam"]) == (5572, 5169, 747, 653)
    assert (counts["distinct_normalised"], counts["distinct_spam_normalised"]) == (5157, 642)


@needs_real_data
def test_the_chapters_split_leaks_41_test_messages_37_of_them_spam(tmp_path):
    splits = data_splits.prepare_spam_splits(SMS_ZIP, tmp_path, verbose=False)
    report = duplicate_report(splits["train"], splits["validation"], splits["test"])
    leaked = report["leaked_test"]
    assert (report["test_rows"], len(leaked), int((leaked["Label"] == 1).sum())) == (300, 41, 37)
    assert report["normalised"]["test_in_train_or_validation"] == 44


@needs_real_data
def test_dedupe_leaves_no_duplicate_anywhere(tmp_path):
    splits = data_splits.prepare_spam_splits(SMS_ZIP, tmp_path, dedupe=True, verbose=False)
    report = duplicate_report(splits["train"], splits["validation"], splits["test"])
    for kind in ("exact", "normalised"):
        assert report[kind] == {"within": {"train": 0, "validation": 0, "test": 0}, "validation_in_train": 0,
                                "test_in_train_or_validation": 0}
    assert splits["num_rows"]["used"] == 2 * 642  # balanced: the 642 distinct spam and as many distinct ham


@needs_real_data
def test_the_training_run_prints_the_duplicate_line_and_dedupe_empties_it(tmp_path, capsys):
    common = ["--test-mode", "--data", SMS_ZIP, "--data-dir", str(tmp_path / "data"), "--num-epochs", "1",
              "--eval-freq", "100", "--eval-iter", "1"]
    assert cli.main(common + ["--output-dir", str(tmp_path / "a")]) == 0
    assert "Duplicates: 41 of 300 test messages also appear in train/validation (4 ham, 37 spam)" in capsys.readouterr().out
    assert cli.main(common + ["--output-dir", str(tmp_path / "b"), "--dedupe"]) == 0
    assert "Duplicates: 0 of 258 test messages also appear in train/validation, 0 ignoring" in capsys.readouterr().out
