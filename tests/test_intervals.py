"""Accuracies with their counts and 95% Wilson intervals, printed and in metrics.json."""

import json
import math

import pytest

from beyond import cli
from beyond.intervals import (
    accuracy_record,
    correct_count,
    difference_interval,
    format_accuracy,
    format_difference,
    wilson_interval,
)


@pytest.mark.parametrize("correct, total, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombes_published_values(correct, total, low, high):
    assert wilson_interval(correct, total) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("a, n, b, m, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (score interval, no correction)
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_difference_interval_matches_newcombes_published_values(a, n, b, m, low, high):
    assert difference_interval(a, n, b, m) == pytest.approx((low, high), abs=5e-5)


def test_the_baseline_and_the_chapter_are_within_chance():
    # TF-IDF's 290/300 against the chapter's 287/300: one point, three messages
    assert format_difference(290, 300, 287, 300) == "+1.00 points (95% CI -2.23 to +4.30): within chance"
    assert format_difference(290, 300, 235, 300).endswith("beyond chance")  # the book's 6.1 (78.33%)


def test_the_chapters_test_accuracy_with_count_and_interval():
    assert format_accuracy(287, 300) == "95.67% (287/300, 95% CI 92.73-97.45%)"
    assert accuracy_record(287, 300)["ci95"] == pytest.approx([0.9273, 0.9745], abs=5e-5)


def test_empty_split_has_no_interval():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    assert format_accuracy(0, 0) == "n/a (0 examples)"


def test_correct_count_is_the_confusion_matrix_diagonal():
    assert correct_count([[140, 10], [3, 147]]) == 287


def test_metrics_json_stores_counts_and_intervals_and_the_run_prints_them(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--test-mode", "--data", "synthetic", "--data-dir", str(tmp_path / "data"), "--output-dir",
                     str(out), "--num-epochs", "1", "--eval-freq", "10", "--eval-iter", "2"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for split, key in (("train", "train_accuracy"), ("validation", "val_accuracy"), ("test", "test_accuracy")):
        record = metrics["accuracy_intervals"][split]
        assert record["correct"] / record["total"] == pytest.approx(metrics[key])
        assert record["ci95"][0] <= metrics[key] <= record["ci95"][1]
    test = metrics["accuracy_intervals"]["test"]
    assert test["total"] == 60 and test["correct"] == correct_count(metrics["classification_metrics"]["test"]
                                                                    ["confusion_matrix"])
    assert f"Test accuracy: {format_accuracy(test['correct'], test['total'])}\n" in printed
