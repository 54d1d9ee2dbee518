"""--protocol cv5: stratified, disjoint folds on every distinct message, scored for GPT-2 and the baseline alike."""

import json
import os

import numpy as np
import pytest

from beyond import cli
from beyond.cross_validation import (
    cross_validate,
    fold_scores,
    load_all_messages,
    stratified_folds,
    tfidf_spam_probabilities,
)
from beyond.duplicates import normalise_text

SMS_ZIP = os.environ.get("SMS_SPAM_ZIP", "")
needs_real_data = pytest.mark.skipif(not os.path.isfile(SMS_ZIP), reason="$SMS_SPAM_ZIP (the real SMS data) is not set")


def test_folds_are_stratified_disjoint_and_cover_every_message():
    labels = np.array([1] * 642 + [0] * 4515)  # the deduplicated SMS data's classes
    folds = stratified_folds(labels, 5, seed=123)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(labels)))  # each message in exactly one test fold
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == len(labels)
        assert abs(labels[test].sum() - 642 / 5) <= 1  # spam in proportion, to one message
    assert [list(t) for _, t in folds] == [list(t) for _, t in stratified_folds(labels, 5, seed=123)]


def test_fold_scores_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 0, 0]
    probabilities = [0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.1, 0.4]  # 2 spam caught, 1 missed, 1 false alarm
    scores = fold_scores(labels, probabilities)
    assert (scores["correct"], scores["total"]) == (6, 8)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    # ranked by P(spam): spam, spam, ham, ham, spam: average precision (1/1 + 2/2 + 3/5) / 3
    assert scores["pr_auc"] == pytest.approx((1 + 1 + 3 / 5) / 3)


def test_cross_validate_pools_every_fold_and_averages_them():
    import pandas as pd

    messages = pd.DataFrame({"Label": [1] * 10 + [0] * 40, "Text": [f"m{i}" for i in range(50)]})
    result = cross_validate(messages, lambda train, test: (test["Label"] == 1).astype(float).to_numpy())
    assert result["overall"]["correct"] == 50 and len(result["folds"]) == 5
    assert [f["total"] for f in result["folds"]] == [10] * 5
    assert result["mean_sd"]["f1"] == {"n": 5, "mean": 1.0, "sd": 0.0, "min": 1.0, "max": 1.0}


@needs_real_data
def test_the_protocols_data_is_every_distinct_message_unbalanced():
    messages, label_names = load_all_messages(SMS_ZIP, offline=True)
    assert label_names == ["ham", "spam"]
    assert (len(messages), int(messages["Label"].sum())) == (5157, 642)
    assert messages["Text"].map(normalise_text).is_unique


@needs_real_data
def test_baseline_under_cv5_on_the_real_data():
    messages, _ = load_all_messages(SMS_ZIP, offline=True)
    result = cross_validate(messages, tfidf_spam_probabilities)
    assert result["overall"]["total"] == 5157
    assert 0.97 < result["overall"]["accuracy"] < 1 and 0.85 < result["overall"]["f1"] < 1


def test_cv5_flag_scores_gpt_and_the_baseline_on_the_same_folds(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--test-mode", "--data", "synthetic", "--data-dir", str(tmp_path / "data"), "--output-dir",
                     str(out), "--num-epochs", "1", "--eval-freq", "50", "--eval-iter", "1", "--batch-size", "4",
                     "--protocol", "cv5"]) == 0
    saved = json.loads((out / "cv5.json").read_text())
    assert saved["messages"] == 228  # the synthetic sample's distinct messages, unbalanced
    assert list(saved["models"]) == ["TF-IDF + logistic regression", "tiny random GPT (test mode)"]
    for result in saved["models"].values():
        assert [f["total"] for f in result["folds"]] == [46, 46, 46, 45, 45]
        assert result["overall"]["total"] == 228 and len(result["overall"]["ci95"]) == 2
    assert "| tiny random GPT (test mode) | pooled |" in capsys.readouterr().out


def test_seeds_and_cv5_do_not_combine(tmp_path, capsys):
    assert cli.main(["--test-mode", "--data", "synthetic", "--output-dir", str(tmp_path), "--protocol", "cv5",
                     "--seeds", "1,2"]) == 1
    assert "--seeds and --protocol cv5 do not combine" in capsys.readouterr().err
