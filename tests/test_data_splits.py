"""beyond.data_splits: any data source to the chapter's three split files, and finding data already here."""

import zipfile

import pandas as pd
import pytest

from beyond.data_loaders import create_data_loaders
from beyond.data_splits import find_local_sms_zip, prepare_spam_splits
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from spam_dataset import DataError, create_balanced_dataset, random_split

from tiny import SHARED_ZIP, needs_real_data, write


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


@needs_real_data
def test_the_chapters_split_files_on_the_real_data(tmp_path):
    with zipfile.ZipFile(SHARED_ZIP) as zf, zf.open("SMSSpamCollection") as member:
        df = pd.read_csv(member, sep="\t", header=None, names=["Label", "Text"])
    balanced_df = create_balanced_dataset(df)
    balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})
    train_df, _, _ = random_split(balanced_df, 0.7, 0.1)
    train_df.to_csv(tmp_path / "train.csv", index=None)  # as the chapter writes it

    info = prepare_spam_splits(SHARED_ZIP, tmp_path / "data", verbose=False)
    assert info["label_names"] == ["ham", "spam"]
    assert info["num_rows"] == {"loaded": 5572, "used": 1494, "train": 1045, "validation": 149, "test": 300}
    assert "SMS Spam Collection" in info["source"] and not info["synthetic"]
    assert info["train"].read_bytes() == (tmp_path / "train.csv").read_bytes()


@needs_real_data
def test_offline_mode_uses_the_shared_zip(tmp_path):
    info = prepare_spam_splits(None, tmp_path, offline=True, verbose=False)
    assert info["num_rows"]["train"] == 1045 and not info["synthetic"]



def test_one_class_only(tmp_path):
    df = pd.DataFrame({"Label": ["ham"] * 5, "Text": [f"hi {i}" for i in range(5)]})
    with pytest.raises(DataError, match="one class only"):
        prepare_spam_splits(df, tmp_path, balance=False, verbose=False)


def test_too_few_rows_leave_nothing_half_written(tmp_path):
    df = pd.DataFrame({"Label": ["ham", "spam", "ham", "spam"], "Text": ["a", "b", "c", "d"]})
    with pytest.raises(DataError, match="too few"):
        prepare_spam_splits(df, tmp_path, verbose=False)
    assert not list(tmp_path.iterdir())


def test_user_csv_with_custom_columns_and_three_classes(tmp_path, tokenizer):
    rows = ["id;comment;mood"]  # not guessable names, and a three-class label
    rows += [f"{i};great product number {i};positive" for i in range(30)]
    rows += [f"{i};awful, broke after {i} days;negative" for i in range(30, 50)]
    rows += [f"{i};it is fine I guess ({i});neutral" for i in range(50, 90)]
    path = write(tmp_path / "reviews.tsv", "\n".join(rows).replace(";", "\t") + "\n")
    info = prepare_spam_splits(path, tmp_path / "out", text_column="comment", label_column="mood",
                                  verbose=False)
    assert info["label_names"] == ["negative", "neutral", "positive"]
    assert info["class_counts"] == {"negative": 20, "neutral": 40, "positive": 30}
    assert info["num_rows"] == {"loaded": 90, "used": 60, "train": 42, "validation": 6, "test": 12}
    train = pd.read_csv(info["train"])
    assert list(train.columns) == ["Label", "Text"] and set(train["Label"]) == {0, 1, 2}
    assert "reviews.tsv" in info["source"] and "'comment'" in info["source"]

    unbalanced = prepare_spam_splits(path, tmp_path / "all", text_column="comment", label_column="mood",
                                        balance=False, verbose=False)
    assert unbalanced["num_rows"]["used"] == 90
    loaders = create_data_loaders(unbalanced["train"], unbalanced["validation"], unbalanced["test"], tokenizer,
                                     batch_size=4)
    assert [len(loader) for loader in loaders] == [63 // 4, 3, 5]



def test_offline_without_data_uses_the_synthetic_sample_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    info = prepare_spam_splits(None, tmp_path, offline=True)
    assert info["synthetic"] and "SYNTHETIC" in info["source"] and "SYNTHETIC" in info["note"]
    assert "SYNTHETIC" in capsys.readouterr().out
    assert info["num_rows"]["train"] == 210 and info["label_names"] == ["ham", "spam"]


# ---------------------------------------------------------------------------------------------------------
# Finding data the user (or CI) already has: SMS_SPAM_ZIP, then the data folder; never ../shared by itself
# ---------------------------------------------------------------------------------------------------------


def test_find_local_sms_zip_reads_the_environment_then_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    assert find_local_sms_zip(tmp_path) is None  # nothing downloaded, nothing handed over
    given = write(tmp_path / "given.zip", "x")
    monkeypatch.setenv("SMS_SPAM_ZIP", str(given))
    assert find_local_sms_zip(tmp_path) == given
    monkeypatch.setenv("SMS_SPAM_ZIP", str(tmp_path / "nowhere.zip"))
    with pytest.raises(DataError, match="SMS_SPAM_ZIP") as error:
        find_local_sms_zip(tmp_path)
    assert "\n" not in str(error.value)



def test_the_package_does_not_look_beside_the_project(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    info = prepare_spam_splits(None, tmp_path, offline=True, verbose=False)
    assert info["synthetic"]  # even when ../shared holds the archive



@needs_real_data
def test_offline_mode_uses_the_data_a_user_already_downloaded(tmp_path, monkeypatch):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    (tmp_path / "sms_spam_collection.zip").write_bytes(SHARED_ZIP.read_bytes())  # as the download leaves it
    assert find_local_sms_zip(tmp_path) == tmp_path / "sms_spam_collection.zip"
    info = prepare_spam_splits(None, tmp_path, offline=True, verbose=False)
    assert not info["synthetic"] and info["num_rows"]["train"] == 1045
    (tmp_path / "sms_spam_collection.zip").write_bytes(b"not a zip")  # a broken download is not used
    assert find_local_sms_zip(tmp_path) is None

