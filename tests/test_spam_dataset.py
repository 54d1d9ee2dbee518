"""spam_dataset: the chapter's figures on the real file, downloads from 127.0.0.1, and the dataset's clear errors."""

import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import spam_dataset as sd
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from gpt_download import DownloadError

from tiny import SHARED_ZIP, needs_real_data, write


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


# ---------------------------------------------------------------------------------------------------------
# The chapter's figures on the real file
# ---------------------------------------------------------------------------------------------------------


@needs_real_data
def test_chapter_figures_on_the_real_data(tmp_path, tokenizer, monkeypatch):
    assert tokenizer.encode("Do you have time") == [5211, 345, 423, 640]
    monkeypatch.chdir(tmp_path)
    tsv = tmp_path / "SMSSpamCollection.tsv"
    tsv.write_bytes(zipfile.ZipFile(SHARED_ZIP).read("SMSSpamCollection"))
    df = pd.read_csv(tsv, sep="\t", header=None, names=["Label", "Text"])  # the chapter's own reading
    assert len(df) == 5572 and df["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}

    balanced_df = sd.create_balanced_dataset(df)
    assert balanced_df["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    num_spam = df[df["Label"] == "spam"].shape[0]  # the chapter's create_balanced_dataset, typed out
    ham_subset = df[df["Label"] == "ham"].sample(num_spam, random_state=123)
    pd.testing.assert_frame_equal(balanced_df, pd.concat([ham_subset, df[df["Label"] == "spam"]]))
    balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})

    train_df, validation_df, test_df = sd.random_split(balanced_df, 0.7, 0.1)
    assert (len(train_df), len(validation_df), len(test_df)) == (1045, 149, 300)
    for name, split in (("train", train_df), ("validation", validation_df), ("test", test_df)):
        split.to_csv(f"{name}.csv", index=None)

    train_dataset = sd.SpamDataset(csv_file="train.csv", max_length=None, tokenizer=tokenizer)
    assert train_dataset.max_length == 120
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no validation/test message is longer than 120 tokens: no warning
        val_dataset = sd.SpamDataset("validation.csv", tokenizer, max_length=train_dataset.max_length)
        test_dataset = sd.SpamDataset("test.csv", tokenizer, max_length=train_dataset.max_length)
    torch.manual_seed(123)
    train_loader = DataLoader(train_dataset, batch_size=8, shuffle=True, num_workers=0, drop_last=True)
    val_loader = DataLoader(val_dataset, batch_size=8, num_workers=0, drop_last=False)
    test_loader = DataLoader(test_dataset, batch_size=8, num_workers=0, drop_last=False)
    assert (len(train_loader), len(val_loader), len(test_loader)) == (130, 19, 38)
    input_batch, target_batch = next(iter(train_loader))
    assert input_batch.shape == torch.Size([8, 120]) and input_batch.dtype == torch.long
    assert target_batch.shape == torch.Size([8]) and set(target_batch.tolist()) <= {0, 1}


# ---------------------------------------------------------------------------------------------------------
# Download and extraction against a server on 127.0.0.1
# ---------------------------------------------------------------------------------------------------------

MEMBER = b"ham\tSee you at 7\nspam\tWIN a prize now, call 0900\n" * 40


def make_zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()



@pytest.fixture
def small_archive(monkeypatch):
    """A small zip standing in for UCI's (with a readme, as UCI's has); the known member hash points at it."""
    monkeypatch.setattr(sd, "SMS_MEMBER_SIZE", len(MEMBER))
    monkeypatch.setattr(sd, "SMS_MEMBER_SHA256", hashlib.sha256(MEMBER).hexdigest())
    return make_zip({"readme": b"SMS Spam Collection v.1", "SMSSpamCollection": MEMBER})



def paths(tmp_path):
    """The chapter's three paths, as the chapter passes them (two strings and a Path)."""
    extracted = tmp_path / "sms_spam_collection"
    return str(tmp_path / "sms_spam_collection.zip"), str(extracted), extracted / "SMSSpamCollection.tsv"



def test_download_extracts_only_the_data_file_and_then_works_offline(http_server, tmp_path, small_archive):
    url = http_server.serve("/sms.zip", small_archive)
    zip_path, extracted, data_file = paths(tmp_path)
    assert sd.download_and_unzip_spam_data(url, zip_path, extracted, data_file, backup_url=None) == data_file
    assert data_file.read_bytes() == MEMBER
    assert sorted(p.name for p in Path(extracted).iterdir()) == ["SMSSpamCollection.tsv"]  # no readme, no tmp

    http_server.stop()
    sd.download_and_unzip_spam_data(url, zip_path, extracted, data_file)  # valid file: no network
    data_file.unlink()
    sd.download_and_unzip_spam_data(url, zip_path, extracted, data_file)  # valid zip: extracted again, offline
    assert data_file.read_bytes() == MEMBER
    assert http_server.count("/sms.zip") == 1



@needs_real_data
def test_download_of_the_real_archive_checks_the_known_hash(http_server, tmp_path):
    url = http_server.serve("/sms+spam+collection.zip", SHARED_ZIP.read_bytes())
    zip_path, extracted, data_file = paths(tmp_path)
    sd.download_and_unzip_spam_data(url, zip_path, extracted, data_file, backup_url=None)
    assert hashlib.sha256(data_file.read_bytes()).hexdigest() == sd.SMS_MEMBER_SHA256
    assert hashlib.sha256(Path(zip_path).read_bytes()).hexdigest() == sd.SMS_ZIP_SHA256
    assert len(pd.read_csv(data_file, sep="\t", header=None, names=["Label", "Text"])) == 5572



def test_primary_failing_falls_back_to_backup(http_server, tmp_path, small_archive):
    primary = http_server.serve("/primary.zip", b"", status=500)
    backup = http_server.serve("/backup.zip", small_archive)
    zip_path, extracted, data_file = paths(tmp_path)
    sd.download_and_unzip_spam_data(primary, zip_path, extracted, data_file, backup_url=backup)
    assert data_file.read_bytes() == MEMBER
    assert http_server.count("/primary.zip") == 1 and http_server.count("/backup.zip") == 1



def test_primary_serving_a_corrupt_zip_falls_back_to_backup(http_server, tmp_path, small_archive):
    primary = http_server.serve("/primary.zip", small_archive[: len(small_archive) // 2])  # 200, but cut short
    backup = http_server.serve("/backup.zip", small_archive)
    zip_path, extracted, data_file = paths(tmp_path)
    sd.download_and_unzip_spam_data(primary, zip_path, extracted, data_file, backup_url=backup)
    assert data_file.read_bytes() == MEMBER and Path(zip_path).read_bytes() == small_archive



def test_corrupt_zip_on_disk_is_deleted_and_fetched_again(http_server, tmp_path, small_archive):
    url = http_server.serve("/sms.zip", small_archive)
    zip_path, extracted, data_file = paths(tmp_path)
    Path(zip_path).write_bytes(small_archive[:-300])  # truncated by an earlier, interrupted run
    data_file.parent.mkdir()
    data_file.write_bytes(MEMBER[:100])  # and a half-written data file
    sd.download_and_unzip_spam_data(url, zip_path, extracted, data_file, backup_url=None)
    assert data_file.read_bytes() == MEMBER and Path(zip_path).read_bytes() == small_archive
    assert http_server.count("/sms.zip") == 1



def test_every_source_failing_raises_and_leaves_nothing(http_server, tmp_path, small_archive, refused_url):
    bad = http_server.serve("/bad.zip", b"<html>not a zip</html>")
    zip_path, extracted, data_file = paths(tmp_path)
    with pytest.raises(DownloadError, match="bad.zip"):
        sd.download_and_unzip_spam_data(refused_url, zip_path, extracted, data_file, backup_url=bad)
    with pytest.raises(DownloadError, match="file.bin"):
        sd.download_and_unzip_spam_data(refused_url, zip_path, extracted, data_file, backup_url=None)
    assert not Path(zip_path).exists() and not data_file.exists()



def test_hostile_zip_cannot_write_outside_the_target(http_server, tmp_path, small_archive):
    hostile = make_zip({"../evil": b"pwned", "/abs_evil": b"pwned", "../SMSSpamCollection": MEMBER})
    url = http_server.serve("/hostile.zip", hostile)
    target = tmp_path / "inner" / "deeper"
    target.mkdir(parents=True)
    zip_path, extracted, data_file = paths(target)
    sd.download_and_unzip_spam_data(url, zip_path, extracted, data_file, backup_url=None)
    assert data_file.read_bytes() == MEMBER
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["inner/deeper/sms_spam_collection.zip", "inner/deeper/sms_spam_collection/SMSSpamCollection.tsv"]


# ---------------------------------------------------------------------------------------------------------
# Balancing, splitting, and the dataset's clear errors
# ---------------------------------------------------------------------------------------------------------


def test_balancing_equal_classes_samples_ham_as_the_chapter_does():
    # The chapter always samples ham to the number of spam: with equal counts that is a shuffle of the ham rows.
    df = pd.DataFrame({"Label": ["ham", "spam"] * 20, "Text": [f"message {i}" for i in range(40)]})
    num_spam = (df["Label"] == "spam").sum()
    chapter = pd.concat([df[df["Label"] == "ham"].sample(num_spam, random_state=123), df[df["Label"] == "spam"]])
    pd.testing.assert_frame_equal(sd.create_balanced_dataset(df), chapter)


def test_missing_or_empty_split_files(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        sd.SpamDataset(tmp_path / "nope.csv", tokenizer=None)
    with pytest.raises(sd.DataError, match="empty.csv is empty"):
        sd.SpamDataset(write(tmp_path / "empty.csv", ""), tokenizer)
    with pytest.raises(sd.DataError, match="header but no rows"):
        sd.SpamDataset(write(tmp_path / "train.csv", "Label,Text\n"), tokenizer)


def test_split_without_the_columns_lists_them(tokenizer):
    with pytest.raises(sd.DataError, match=r"no 'Label' column.*\['Text', 'y'\]"):
        sd.SpamDataset(pd.DataFrame({"Text": ["a"], "y": [0]}), tokenizer)


def test_labels_must_be_class_ids(tokenizer):
    with pytest.raises(sd.DataError, match=r"integer class ids but holds \['ham', 'spam'\].*map"):
        sd.SpamDataset(pd.DataFrame({"Label": ["ham", "spam"], "Text": ["hi", "WIN"]}), tokenizer)
    with pytest.raises(sd.DataError, match="negative"):
        sd.SpamDataset(pd.DataFrame({"Label": [0, -1], "Text": ["hi", "WIN"]}), tokenizer)


def test_empty_texts_in_a_split_are_dropped_with_a_count(tmp_path, tokenizer):
    path = write(tmp_path / "train.csv", 'Label,Text\n0,hello\n1,""\n0,   \n1,WIN\n,ok\n')
    with pytest.warns(sd.DataWarning, match="dropped 3 row"):
        dataset = sd.SpamDataset(path, tokenizer)
    assert len(dataset) == 2 and dataset[1][1].item() == 1
    with pytest.raises(sd.DataError, match="every row has an empty text"), pytest.warns(sd.DataWarning):
        sd.SpamDataset(write(tmp_path / "blank.csv", 'Label,Text\n0,""\n1, \n'), tokenizer)


def test_balancing_one_class_only():
    df = pd.DataFrame({"Label": ["ham"] * 5, "Text": [f"hi {i}" for i in range(5)]})
    with pytest.raises(sd.DataError, match="one class only.*'ham'"):
        sd.create_balanced_dataset(df)


def test_too_few_rows_for_the_split():
    df = pd.DataFrame({"Label": ["ham", "spam", "ham", "spam"], "Text": ["a", "b", "c", "d"]})
    with pytest.raises(sd.DataError, match="4 rows are too few.*validation split is empty"):
        sd.random_split(df, 0.7, 0.1)


def test_truncation_is_warned_once_and_padding_is_the_chapters(tokenizer):
    df = pd.DataFrame({"Label": [0, 1, 0], "Text": ["one two three four five six seven", "hi", "a b c d e f"]})
    with pytest.warns(sd.DataWarning, match="2 of 3 texts were longer than max_length=4") as record:
        dataset = sd.SpamDataset(df, tokenizer, max_length=4)
    assert len(record) == 1
    ids, label = dataset[1]
    assert ids.tolist() == tokenizer.encode("hi") + [50256] * 3 and label.item() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sd.SpamDataset(df, tokenizer).max_length == len(tokenizer.encode(df["Text"][0]))


def test_special_token_text_in_a_message_is_plain_text(tokenizer):
    df = pd.DataFrame({"Label": [0, 1], "Text": ["hi", "hello <|endoftext|> there"]})
    dataset = sd.SpamDataset(df, tokenizer)
    as_text = tokenizer.encode("hello <|endoftext|> there", disallowed_special=())
    assert 50256 not in as_text and dataset.encoded_texts[1] == as_text
