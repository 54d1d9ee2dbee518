"""beyond.synthetic_data: the offline sample is deterministic, varied, and labelled as synthetic."""

import pandas as pd

from beyond.synthetic_data import make_synthetic_spam_data


def test_synthetic_sample_is_deterministic_and_labelled():
    a, b = make_synthetic_spam_data(), make_synthetic_spam_data()
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 300 and a["Label"].value_counts().to_dict() == {"ham": 150, "spam": 150}
    assert a["Text"].nunique() > 200  # templates with variety, not 300 copies
    assert not make_synthetic_spam_data(seed=1).equals(a)
    assert a.attrs["synthetic"] and "SYNTHETIC" in a.attrs["source"] and "SYNTHETIC" in a.attrs["note"]
