"""spam_dataset: the chapter's figures on the real file, downloads from 127.0.0.1, and every bad data file."""

import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

import spam_dataset as sd
from gpt_download import DownloadError, get_gpt2_tokenizer

SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sms_spam_collection.zip"
needs_real_data = pytest.mark.skipif(not SHARED_ZIP.is_file(),
                                     reason=f"real SMS data not found at {SHARED_ZIP} (the team's shared folder)")


@pytest.fixture(scope="module")
def tokenizer():
    return get_gpt2_tokenizer()


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------------------------------------------------
# The chapter's figures on the real file
# ---------------------------------------------------------------------------------------------------------


@needs_real_data
def test_chapter_figures_on_the_real_data(tmp_path, tokenizer, monkeypatch):
    assert tokenizer.encode("Do you have time") == [5211, 345, 423, 640]

    df = sd.load_spam_dataframe(SHARED_ZIP)
    assert list(df.columns) == ["Label", "Text"]
    assert len(df) == 5572
    assert df["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}

    # The chapter's own code, run on the extracted TSV, must give the very same rows and files as ours.
    tsv = tmp_path / "SMSSpamCollection.tsv"
    tsv.write_bytes(zipfile.ZipFile(SHARED_ZIP).read("SMSSpamCollection"))
    chapter_df = pd.read_csv(tsv, sep="\t", header=None, names=["Label", "Text"])
    pd.testing.assert_frame_equal(chapter_df, sd.load_spam_dataframe(tsv))
    pd.testing.assert_frame_equal(chapter_df, df)

    balanced_df = sd.create_balanced_dataset(chapter_df)
    assert balanced_df["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    num_spam = chapter_df[chapter_df["Label"] == "spam"].shape[0]
    ham_subset = chapter_df[chapter_df["Label"] == "ham"].sample(num_spam, random_state=123)
    pd.testing.assert_frame_equal(balanced_df, pd.concat([ham_subset, chapter_df[chapter_df["Label"] == "spam"]]))
    balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})

    train_df, validation_df, test_df = sd.random_split(balanced_df, 0.7, 0.1)
    assert (len(train_df), len(validation_df), len(test_df)) == (1045, 149, 300)
    monkeypatch.chdir(tmp_path)
    train_df.to_csv("train.csv", index=None)

    info = sd.prepare_spam_splits(SHARED_ZIP, tmp_path / "data", verbose=False)
    assert info["label_names"] == ["ham", "spam"]
    assert info["num_rows"] == {"loaded": 5572, "used": 1494, "train": 1045, "validation": 149, "test": 300}
    assert "SMS Spam Collection" in info["source"] and not info["synthetic"]
    assert info["train"].read_bytes() == (tmp_path / "train.csv").read_bytes()

    train_dataset = sd.SpamDataset(csv_file="train.csv", max_length=None, tokenizer=tokenizer)
    assert train_dataset.max_length == 120

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no validation/test message is longer than 120 tokens: no warning
        train_loader, val_loader, test_loader = sd.create_data_loaders(
            info["train"], info["validation"], info["test"], tokenizer)
    assert (len(train_loader), len(val_loader), len(test_loader)) == (130, 19, 38)
    input_batch, target_batch = next(iter(train_loader))
    assert input_batch.shape == torch.Size([8, 120]) and input_batch.dtype == torch.long
    assert target_batch.shape == torch.Size([8]) and set(target_batch.tolist()) <= {0, 1}
    assert val_loader.dataset.max_length == test_loader.dataset.max_length == 120


@needs_real_data
def test_offline_mode_uses_the_shared_zip(tmp_path):
    info = sd.prepare_spam_splits(None, tmp_path, offline=True, verbose=False)
    assert info["num_rows"]["train"] == 1045 and not info["synthetic"]


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
# Bad data files: one clear DataError each
# ---------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(sd.DataError, match="nope.csv does not exist") as excinfo:
        sd.load_spam_dataframe(missing)
    assert isinstance(excinfo.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        sd.SpamDataset(missing, tokenizer=None)
    with pytest.raises(sd.DataError, match="holds no SMSSpamCollection"):
        sd.load_spam_dataframe(tmp_path)  # an empty folder


def test_empty_files(tmp_path, tokenizer):
    with pytest.raises(sd.DataError, match="empty.csv is empty"):
        sd.load_spam_dataframe(write(tmp_path / "empty.csv", "\n  \n"))
    with pytest.raises(sd.DataError, match="header but no rows"):
        sd.load_spam_dataframe(write(tmp_path / "header.csv", "text,label\n"))
    with pytest.raises(sd.DataError, match="header but no rows"):
        sd.SpamDataset(write(tmp_path / "train.csv", "Label,Text\n"), tokenizer)


def test_missing_text_or_label_column_lists_the_columns(tmp_path, tokenizer):
    path = write(tmp_path / "mine.csv", "body_of_msg,kind\nhello there,a\nbuy now,b\n")
    with pytest.raises(sd.DataError, match=r"no text column.*\['body_of_msg', 'kind'\].*--text-column"):
        sd.load_spam_dataframe(path)
    with pytest.raises(sd.DataError, match=r"no label column.*--label-column"):
        sd.load_spam_dataframe(path, text_column="body_of_msg")
    with pytest.raises(sd.DataError, match=r"no text column 'message'.*\['body_of_msg', 'kind'\]"):
        sd.load_spam_dataframe(path, text_column="message", label_column="kind")
    with pytest.raises(sd.DataError, match=r"no 'Label' column.*\['Text', 'y'\]"):
        sd.SpamDataset(pd.DataFrame({"Text": ["a"], "y": [0]}), tokenizer)


def test_unexpected_labels(tmp_path, tokenizer):
    with pytest.raises(sd.DataError, match=r"'ham' or 'spam' but found 'hma'"):
        sd.load_spam_dataframe(write(tmp_path / "sms.tsv", "ham\thi\nhma\tbye\nspam\tWIN\n"))
    with pytest.raises(sd.DataError, match=r"'ham' or 'spam' but found 'Spam!'"):  # known by its name
        sd.load_spam_dataframe(write(tmp_path / "SMSSpamCollection.tsv", "Spam!\tbye\nham\thi\n"))
    with pytest.raises(sd.DataError, match=r"integer class ids but holds \['ham', 'spam'\].*map"):
        sd.SpamDataset(pd.DataFrame({"Label": ["ham", "spam"], "Text": ["hi", "WIN"]}), tokenizer)
    with pytest.raises(sd.DataError, match="negative"):
        sd.SpamDataset(pd.DataFrame({"Label": [0, -1], "Text": ["hi", "WIN"]}), tokenizer)


def test_empty_and_nan_texts_are_dropped_with_a_count(tmp_path):
    path = write(tmp_path / "mine.csv", 'text,label\nhello,ham\n"",spam\n   ,ham\nWIN,spam\nok,\n')
    with pytest.warns(sd.DataWarning, match="dropped 2 row.*empty or missing text and 1 with a missing label"):
        df = sd.load_spam_dataframe(path)
    assert df.to_dict("list") == {"Label": ["ham", "spam"], "Text": ["hello", "WIN"]}
    with pytest.raises(sd.DataError, match="every row has an empty text"):
        sd.load_spam_dataframe(write(tmp_path / "blank.csv", 'text,label\n"",ham\n ,spam\n'))


def test_non_utf8_file_is_read_as_cp1252_or_names_the_encoding(tmp_path):
    path = write(tmp_path / "spam.csv", "v1,v2\nham,Café at 5? – ok\nspam,Win £1000 now\n", encoding="cp1252")
    with pytest.warns(sd.DataWarning, match="not UTF-8; read it as cp1252"):
        df = sd.load_spam_dataframe(path)  # the Kaggle layout: columns v1 / v2 guessed
    assert df["Text"].tolist() == ["Café at 5? – ok", "Win £1000 now"]
    with pytest.raises(sd.DataError, match="not valid utf-8.*--encoding"):
        sd.load_spam_dataframe(path, encoding="utf-8")
    assert sd.load_spam_dataframe(path, encoding="latin-1")["Text"][1] == "Win £1000 now"


def test_one_class_only(tmp_path):
    df = pd.DataFrame({"Label": ["ham"] * 5, "Text": [f"hi {i}" for i in range(5)]})
    with pytest.raises(sd.DataError, match="one class only.*'ham'"):
        sd.create_balanced_dataset(df)
    with pytest.raises(sd.DataError, match="one class only"):
        sd.prepare_spam_splits(df, tmp_path, balance=False, verbose=False)


def test_too_few_rows_for_the_split(tmp_path):
    df = pd.DataFrame({"Label": ["ham", "spam", "ham", "spam"], "Text": ["a", "b", "c", "d"]})
    with pytest.raises(sd.DataError, match="4 rows are too few.*validation split is empty"):
        sd.random_split(df, 0.7, 0.1)
    with pytest.raises(sd.DataError, match="too few"):
        sd.prepare_spam_splits(df, tmp_path, verbose=False)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_truncation_is_counted_and_warned_once(tokenizer):
    df = pd.DataFrame({"Label": [0, 1, 0], "Text": ["one two three four five six seven", "hi", "a b c d e f"]})
    with pytest.warns(sd.DataWarning, match="2 of 3 texts were longer than max_length=4") as record:
        dataset = sd.SpamDataset(df, tokenizer, max_length=4)
    assert len(record) == 1 and dataset.num_truncated == 2
    ids, label = dataset[1]
    assert ids.tolist() == tokenizer.encode("hi") + [50256] * 3 and label.item() == 1
    assert sd.SpamDataset(df, tokenizer).num_truncated == 0


# ---------------------------------------------------------------------------------------------------------
# Your own data, synthetic data, loaders
# ---------------------------------------------------------------------------------------------------------


def test_user_csv_with_custom_columns_and_three_classes(tmp_path, tokenizer):
    rows = ["id;comment;mood"]  # not guessable names, and a three-class label
    rows += [f"{i};great product number {i};positive" for i in range(30)]
    rows += [f"{i};awful, broke after {i} days;negative" for i in range(30, 50)]
    rows += [f"{i};it is fine I guess ({i});neutral" for i in range(50, 90)]
    path = write(tmp_path / "reviews.tsv", "\n".join(rows).replace(";", "\t") + "\n")
    info = sd.prepare_spam_splits(path, tmp_path / "out", text_column="comment", label_column="mood",
                                  verbose=False)
    assert info["label_names"] == ["negative", "neutral", "positive"]
    assert info["class_counts"] == {"negative": 20, "neutral": 40, "positive": 30}
    assert info["num_rows"] == {"loaded": 90, "used": 60, "train": 42, "validation": 6, "test": 12}
    train = pd.read_csv(info["train"])
    assert list(train.columns) == ["Label", "Text"] and set(train["Label"]) == {0, 1, 2}
    assert "reviews.tsv" in info["source"] and "'comment'" in info["source"]

    unbalanced = sd.prepare_spam_splits(path, tmp_path / "all", text_column="comment", label_column="mood",
                                        balance=False, verbose=False)
    assert unbalanced["num_rows"]["used"] == 90
    loaders = sd.create_data_loaders(unbalanced["train"], unbalanced["validation"], unbalanced["test"], tokenizer,
                                     batch_size=4)
    assert [len(loader) for loader in loaders] == [63 // 4, 3, 5]


def test_folder_input_and_the_sms_tsv_sniffed_by_content(tmp_path):
    folder = tmp_path / "data" / "sms_spam_collection"
    folder.mkdir(parents=True)
    write(folder / "SMSSpamCollection.tsv", 'ham\tOk lar... "Joking" wif u oni\nspam\tFree entry in 2 a wkly comp\n')
    df = sd.load_spam_dataframe(tmp_path / "data")  # the chapter's layout under a data folder
    assert df.to_dict("list") == {"Label": ["ham", "spam"],
                                  "Text": ['Ok lar... "Joking" wif u oni', "Free entry in 2 a wkly comp"]}


def test_synthetic_sample_is_deterministic_and_labelled(tmp_path, monkeypatch, capsys):
    a, b = sd.make_synthetic_spam_data(), sd.make_synthetic_spam_data()
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 300 and a["Label"].value_counts().to_dict() == {"ham": 150, "spam": 150}
    assert a["Text"].nunique() > 200  # templates with variety, not 300 copies
    assert not sd.make_synthetic_spam_data(seed=1).equals(a)

    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    info = sd.prepare_spam_splits(None, tmp_path, offline=True)
    assert info["synthetic"] and "SYNTHETIC" in info["source"] and "SYNTHETIC" in info["note"]
    assert "SYNTHETIC" in capsys.readouterr().out
    assert info["num_rows"]["train"] == 210 and info["label_names"] == ["ham", "spam"]


def test_loaders_per_batch_padding_and_special_token_text(tmp_path, tokenizer):
    texts = ["hi", "a much longer message than the others here", "hello <|endoftext|> there", "ok then", "yes"]
    df = pd.DataFrame({"Label": [0, 1, 0, 1, 0], "Text": texts})
    dataset = sd.SpamDataset(df, tokenizer)
    as_text = tokenizer.encode("hello <|endoftext|> there", disallowed_special=())
    assert 50256 not in as_text and dataset.encoded_texts[2][:len(as_text)] == as_text

    df.to_csv(tmp_path / "train.csv", index=None)
    df[:3].to_csv(tmp_path / "val.csv", index=None)
    train_loader, val_loader, _ = sd.create_data_loaders(tmp_path / "train.csv", tmp_path / "val.csv",
                                                         tmp_path / "val.csv", tokenizer, batch_size=2,
                                                         per_batch_padding=True)
    first, _ = next(iter(val_loader))  # not shuffled: "hi" and the long one, padded to the long one only
    assert first.shape == (2, len(tokenizer.encode(texts[1])))
    assert first[0].tolist() == tokenizer.encode("hi") + [50256] * (first.shape[1] - 1)
    assert len(train_loader) == 2  # 5 rows, drop_last
    with pytest.raises(sd.DataError, match="fewer than batch_size=8"):
        sd.create_data_loaders(tmp_path / "train.csv", tmp_path / "val.csv", tmp_path / "val.csv", tokenizer)


def test_loaders_are_seeded_and_accept_a_max_length_cap(tmp_path, tokenizer):
    df = pd.DataFrame({"Label": [i % 2 for i in range(20)], "Text": [f"message number {i} " * (i % 5 + 1)
                                                                    for i in range(20)]})
    df.to_csv(tmp_path / "train.csv", index=None)
    paths3 = [tmp_path / "train.csv"] * 3
    with pytest.warns(sd.DataWarning):
        loaders = sd.create_data_loaders(*paths3, tokenizer, batch_size=4, max_length=6)
    assert loaders[0].dataset.max_length == 6 and next(iter(loaders[0]))[0].shape == (4, 6)
    order1 = [y.tolist() for _, y in sd.create_data_loaders(*paths3, tokenizer, batch_size=4)[0]]
    order2 = [y.tolist() for _, y in sd.create_data_loaders(*paths3, tokenizer, batch_size=4)[0]]
    assert order1 == order2


def test_balancing_equal_classes_samples_ham_as_the_chapter_does():
    # The chapter always samples ham to the number of spam: with equal counts that is a shuffle of the ham rows.
    df = pd.DataFrame({"Label": ["ham", "spam"] * 20, "Text": [f"message {i}" for i in range(40)]})
    num_spam = (df["Label"] == "spam").sum()
    chapter = pd.concat([df[df["Label"] == "ham"].sample(num_spam, random_state=123), df[df["Label"] == "spam"]])
    pd.testing.assert_frame_equal(sd.create_balanced_dataset(df), chapter)


# ---------------------------------------------------------------------------------------------------------
# Finding data the user (or CI) already has: SMS_SPAM_ZIP, then the data folder; never ../shared by itself
# ---------------------------------------------------------------------------------------------------------


def test_find_local_sms_zip_reads_the_environment_then_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    assert sd.find_local_sms_zip(tmp_path) is None  # nothing downloaded, nothing handed over
    given = write(tmp_path / "given.zip", "x")
    monkeypatch.setenv("SMS_SPAM_ZIP", str(given))
    assert sd.find_local_sms_zip(tmp_path) == given
    monkeypatch.setenv("SMS_SPAM_ZIP", str(tmp_path / "nowhere.zip"))
    with pytest.raises(sd.DataError, match="SMS_SPAM_ZIP") as error:
        sd.find_local_sms_zip(tmp_path)
    assert "\n" not in str(error.value)


def test_the_package_does_not_look_beside_the_project(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    info = sd.prepare_spam_splits(None, tmp_path, offline=True, verbose=False)
    assert info["synthetic"]  # even when ../shared holds the archive


@needs_real_data
def test_offline_mode_uses_the_data_a_user_already_downloaded(tmp_path, monkeypatch):
    monkeypatch.delenv("SMS_SPAM_ZIP", raising=False)
    (tmp_path / "sms_spam_collection.zip").write_bytes(SHARED_ZIP.read_bytes())  # as the download leaves it
    assert sd.find_local_sms_zip(tmp_path) == tmp_path / "sms_spam_collection.zip"
    info = sd.prepare_spam_splits(None, tmp_path, offline=True, verbose=False)
    assert not info["synthetic"] and info["num_rows"]["train"] == 1045
    (tmp_path / "sms_spam_collection.zip").write_bytes(b"not a zip")  # a broken download is not used
    assert sd.find_local_sms_zip(tmp_path) is None
