"""The TF-IDF + logistic-regression baseline."""

import pytest

from beyond.baseline import fit_tfidf_baseline

SPAM = ["WIN a free prize now, call 0800", "free cash prize, text WIN", "claim your free prize now"]
HAM = ["see you at lunch", "are you coming home tonight", "ok thanks, see you later"]


def test_baseline_separates_toy_spam_from_ham():
    model = fit_tfidf_baseline(SPAM + HAM, [1, 1, 1, 0, 0, 0])
    assert list(model.predict(["free prize, call now", "see you tonight"])) == [1, 0]
    proba = model.predict_proba(["free prize", "see you"])
    assert proba.shape == (2, 2)
    assert proba[0, 1] > 0.5 > proba[1, 1]


def test_baseline_is_deterministic():
    a = fit_tfidf_baseline(SPAM + HAM, [1, 1, 1, 0, 0, 0], seed=1).predict_proba(["free lunch"])
    b = fit_tfidf_baseline(SPAM + HAM, [1, 1, 1, 0, 0, 0], seed=1).predict_proba(["free lunch"])
    assert (a == b).all()


def test_baseline_rejects_one_class_and_mismatched_lengths():
    with pytest.raises(ValueError, match="both classes"):
        fit_tfidf_baseline(SPAM, [1, 1, 1])
    with pytest.raises(ValueError, match="one label per text"):
        fit_tfidf_baseline(SPAM, [1, 1])
