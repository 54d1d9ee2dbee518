"""beyond.own_data: the UCI files and your own CSV/TSV as a Label/Text DataFrame, and every bad file's one clear error."""

import zipfile

import pandas as pd
import pytest

from beyond.own_data import load_spam_dataframe
from spam_dataset import DataError, DataWarning

from tiny import SHARED_ZIP, needs_real_data, write


@needs_real_data
def test_the_uci_zip_and_tsv_read_as_the_chapter_reads_them(tmp_path):
    df = load_spam_dataframe(SHARED_ZIP)
    assert list(df.columns) == ["Label", "Text"] and len(df) == 5572
    tsv = tmp_path / "SMSSpamCollection.tsv"
    tsv.write_bytes(zipfile.ZipFile(SHARED_ZIP).read("SMSSpamCollection"))
    chapter_df = pd.read_csv(tsv, sep="\t", header=None, names=["Label", "Text"])
    pd.testing.assert_frame_equal(chapter_df, load_spam_dataframe(tsv))
    pd.testing.assert_frame_equal(chapter_df, df)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv does not exist") as excinfo:
        load_spam_dataframe(missing)
    assert isinstance(excinfo.value, FileNotFoundError)
    with pytest.raises(DataError, match="holds no SMSSpamCollection"):
        load_spam_dataframe(tmp_path)  # an empty folder


def test_empty_files(tmp_path):
    with pytest.raises(DataError, match="empty.csv is empty"):
        load_spam_dataframe(write(tmp_path / "empty.csv", "\n  \n"))
    with pytest.raises(DataError, match="header but no rows"):
        load_spam_dataframe(write(tmp_path / "header.csv", "text,label\n"))


def test_missing_text_or_label_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "mine.csv", "body_of_msg,kind\nhello there,a\nbuy now,b\n")
    with pytest.raises(DataError, match=r"no text column.*\['body_of_msg', 'kind'\].*--text-column"):
        load_spam_dataframe(path)
    with pytest.raises(DataError, match=r"no label column.*--label-column"):
        load_spam_dataframe(path, text_column="body_of_msg")
    with pytest.raises(DataError, match=r"no text column 'message'.*\['body_of_msg', 'kind'\]"):
        load_spam_dataframe(path, text_column="message", label_column="kind")


def test_unexpected_labels(tmp_path):
    with pytest.raises(DataError, match=r"'ham' or 'spam' but found 'hma'"):
        load_spam_dataframe(write(tmp_path / "sms.tsv", "ham\thi\nhma\tbye\nspam\tWIN\n"))
    with pytest.raises(DataError, match=r"'ham' or 'spam' but found 'Spam!'"):  # known by its name
        load_spam_dataframe(write(tmp_path / "SMSSpamCollection.tsv", "Spam!\tbye\nham\thi\n"))


def test_empty_and_nan_texts_are_dropped_with_a_count(tmp_path):
    path = write(tmp_path / "mine.csv", 'text,label\nhello,ham\n"",spam\n   ,ham\nWIN,spam\nok,\n')
    with pytest.warns(DataWarning, match="dropped 2 row.*empty or missing text and 1 with a missing label"):
        df = load_spam_dataframe(path)
    assert df.to_dict("list") == {"Label": ["ham", "spam"], "Text": ["hello", "WIN"]}
    with pytest.raises(DataError, match="every row has an empty text"):
        load_spam_dataframe(write(tmp_path / "blank.csv", 'text,label\n"",ham\n ,spam\n'))



def test_non_utf8_file_is_read_as_cp1252_or_names_the_encoding(tmp_path):
    path = write(tmp_path / "spam.csv", "v1,v2\nham,Café at 5? – ok\nspam,Win £1000 now\n", encoding="cp1252")
    with pytest.warns(DataWarning, match="not UTF-8; read it as cp1252"):
        df = load_spam_dataframe(path)  # the Kaggle layout: columns v1 / v2 guessed
    assert df["Text"].tolist() == ["Café at 5? – ok", "Win £1000 now"]
    with pytest.raises(DataError, match="not valid utf-8.*--encoding"):
        load_spam_dataframe(path, encoding="utf-8")
    assert load_spam_dataframe(path, encoding="latin-1")["Text"][1] == "Win £1000 now"



def test_folder_input_and_the_sms_tsv_sniffed_by_content(tmp_path):
    folder = tmp_path / "data" / "sms_spam_collection"
    folder.mkdir(parents=True)
    write(folder / "SMSSpamCollection.tsv", 'ham\tOk lar... "Joking" wif u oni\nspam\tFree entry in 2 a wkly comp\n')
    df = load_spam_dataframe(tmp_path / "data")  # the chapter's layout under a data folder
    assert df.to_dict("list") == {"Label": ["ham", "spam"],
                                  "Text": ['Ok lar... "Joking" wif u oni', "Free entry in 2 a wkly comp"]}
