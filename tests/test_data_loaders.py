"""beyond.data_loaders: the chapter's three DataLoaders in one call, seeded, and padded per batch when asked."""

import pandas as pd
import pytest

from beyond.data_loaders import UnpaddedSpamDataset, create_data_loaders
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from spam_dataset import DataError, DataWarning


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


def test_loaders_per_batch_padding(tmp_path, tokenizer):
    texts = ["hi", "a much longer message than the others here", "hello <|endoftext|> there", "ok then", "yes"]
    df = pd.DataFrame({"Label": [0, 1, 0, 1, 0], "Text": texts})
    assert UnpaddedSpamDataset(df, tokenizer).encoded_texts[0] == tokenizer.encode("hi")
    df.to_csv(tmp_path / "train.csv", index=None)
    df[:3].to_csv(tmp_path / "val.csv", index=None)
    train_loader, val_loader, _ = create_data_loaders(tmp_path / "train.csv", tmp_path / "val.csv",
                                                      tmp_path / "val.csv", tokenizer, batch_size=2,
                                                      per_batch_padding=True)
    first, _ = next(iter(val_loader))  # not shuffled: "hi" and the long one, padded to the long one only
    assert first.shape == (2, len(tokenizer.encode(texts[1])))
    assert first[0].tolist() == tokenizer.encode("hi") + [50256] * (first.shape[1] - 1)
    second, _ = list(val_loader)[1]  # the third message alone: no padding at all
    assert second.shape == (1, len(tokenizer.encode(texts[2], disallowed_special=())))
    assert len(train_loader) == 2  # 5 rows, drop_last
    with pytest.raises(DataError, match="fewer than batch_size=8"):
        create_data_loaders(tmp_path / "train.csv", tmp_path / "val.csv", tmp_path / "val.csv", tokenizer)


def test_loaders_are_seeded_and_accept_a_max_length_cap(tmp_path, tokenizer):
    df = pd.DataFrame({"Label": [i % 2 for i in range(20)], "Text": [f"message number {i} " * (i % 5 + 1)
                                                                    for i in range(20)]})
    df.to_csv(tmp_path / "train.csv", index=None)
    paths3 = [tmp_path / "train.csv"] * 3
    with pytest.warns(DataWarning):
        loaders = create_data_loaders(*paths3, tokenizer, batch_size=4, max_length=6)
    assert loaders[0].dataset.max_length == 6 and next(iter(loaders[0]))[0].shape == (4, 6)
    order1 = [y.tolist() for _, y in create_data_loaders(*paths3, tokenizer, batch_size=4)[0]]
    order2 = [y.tolist() for _, y in create_data_loaders(*paths3, tokenizer, batch_size=4)[0]]
    assert order1 == order2

