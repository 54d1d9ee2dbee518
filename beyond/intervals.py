"""An accuracy with its count and a 95% interval: 95.67% is 287 of 300, and anything from 92.7% to 97.5%.

One test message of 300 is a third of a point, so two classifiers a point apart on one split may not differ
at all. The Wilson score interval (scipy's) is the usual choice for a proportion: it stays inside [0, 1] and
is right near 100%, where the textbook normal approximation is not.
"""

import math

from scipy.stats import binomtest


def wilson_interval(correct, total, confidence=0.95):
    """(low, high): the Wilson score interval of correct/total; (nan, nan) when total is 0."""
    correct, total = int(correct), int(total)
    if total == 0:
        return (math.nan, math.nan)
    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def accuracy_record(correct, total):
    """What metrics.json stores for an accuracy: {"correct", "total", "accuracy", "ci95": [low, high]}."""
    correct, total = int(correct), int(total)
    return {"correct": correct, "total": total, "accuracy": correct / total if total else math.nan,
            "ci95": list(wilson_interval(correct, total))}


def format_accuracy(correct, total):
    """"95.67% (287/300, 95% CI 92.73-97.45%)"; "n/a (0 examples)" for an empty split."""
    if not total:
        return "n/a (0 examples)"
    low, high = wilson_interval(correct, total)
    return f"{correct / total * 100:.2f}% ({correct}/{total}, 95% CI {low * 100:.2f}-{high * 100:.2f}%)"


def correct_count(confusion_matrix):
    """The number of right answers: the diagonal of matrix[true][predicted]."""
    return sum(row[i] for i, row in enumerate(confusion_matrix))


def accuracy_records(metrics_by_split):
    """{split: accuracy_record} from classification_metrics' results (their confusion matrices)."""
    return {split: accuracy_record(correct_count(m["confusion_matrix"]), m["num_examples"])
            for split, m in metrics_by_split.items()}


def difference_interval(correct_a, total_a, correct_b, total_b):
    """(low, high): 95% interval of accuracy a minus accuracy b, from their Wilson intervals (Newcombe's method 10).

    It treats the two as independent samples, which is all a published figure (a percentage) allows; for two
    models on the same messages it is wider than a paired comparison would be. 0 inside: within chance.
    """
    p_a, p_b = correct_a / total_a, correct_b / total_b
    (low_a, high_a), (low_b, high_b) = wilson_interval(correct_a, total_a), wilson_interval(correct_b, total_b)
    return (p_a - p_b - math.hypot(p_a - low_a, high_b - p_b), p_a - p_b + math.hypot(high_a - p_a, p_b - low_b))


def format_difference(correct_a, total_a, correct_b, total_b):
    """"+1.00 points (95% CI -2.23 to +4.31): within chance" for accuracy a minus accuracy b."""
    low, high = difference_interval(correct_a, total_a, correct_b, total_b)
    verdict = "within chance" if low <= 0 <= high else "beyond chance"
    return (f"{(correct_a / total_a - correct_b / total_b) * 100:+.2f} points (95% CI {low * 100:+.2f} to "
            f"{high * 100:+.2f}): {verdict}")
