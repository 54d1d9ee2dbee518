"""Helpers that look inside the classifier: attributions, attention, thresholds, the explain CLI."""

import pytest

import look_inside


def test_occlusion_scores_on_a_toy_score_fn():
    calls = []

    def score_fn(texts):
        calls.append(list(texts))
        return [0.9 if "prize" in t else 0.1 for t in texts]

    scores = look_inside.occlusion_scores(score_fn, ["Claim ", "your ", "prize", "!"])
    assert scores == pytest.approx([0.0, 0.0, 0.8, 0.0])
    assert len(calls) == 1  # one batched call: the message and each piece removed
    assert calls[0][0] == "Claim your prize!" and calls[0][3] == "Claim your !"


def test_occlusion_scores_rejects_wrong_number_of_scores():
    with pytest.raises(ValueError, match="one P\\(spam\\) per text"):
        look_inside.occlusion_scores(lambda texts: [0.5], ["a", "b"])
