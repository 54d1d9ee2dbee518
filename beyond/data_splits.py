"""From any data source to the chapter's three split files: data_dir/{train,validation,test}.csv.

`prepare_spam_splits` loads (the SMS download, data already on this machine, your own file or DataFrame, or
the synthetic sample), balances, splits 70/10/20 with the chapter's functions and writes each file atomically.
"""

import os
from pathlib import Path

import pandas as pd

from beyond.duplicates import drop_duplicate_texts
from beyond.own_data import clean_rows, load_spam_dataframe
from beyond.synthetic_data import SYNTHETIC_NOTE, make_synthetic_spam_data
from gpt_download import atomic_write, is_valid_file
from spam_dataset import (
    SMS_MEMBER_SHA256,
    SMS_MEMBER_SIZE,
    SMS_URL,
    DataError,
    create_balanced_dataset,
    download_and_unzip_spam_data,
    random_split,
    read_sms_member,
)

SMS_ZIP_ENV = "SMS_SPAM_ZIP"  # tests and CI hand over a copy of the archive this way (no download)


def find_local_sms_zip(data_dir="data"):
    """SMS data already on this machine, for offline runs: $SMS_SPAM_ZIP, else a valid download in data_dir, else None.

    data_dir is where a run downloads to (data_dir/sms_spam_collection.zip and the extracted .tsv).
    """
    given = os.environ.get(SMS_ZIP_ENV, "").strip()
    if given:
        if not Path(given).is_file():
            raise DataError(f"{SMS_ZIP_ENV}={given} names no file; point it at sms_spam_collection.zip or unset it.")
        return Path(given)
    data_dir = Path(data_dir)
    tsv = data_dir / "sms_spam_collection" / "SMSSpamCollection.tsv"
    if is_valid_file(tsv, SMS_MEMBER_SIZE, SMS_MEMBER_SHA256):
        return tsv
    archive = data_dir / "sms_spam_collection.zip"
    return archive if archive.is_file() and read_sms_member(archive) is not None else None


def prepare_spam_splits(data=None, data_dir="data", *, offline=False, text_column=None, label_column=None,
                        encoding=None, balance=True, train_frac=0.7, validation_frac=0.1, verbose=True,
                        dedupe=False, seed=123):
    """Load (or download, or synthesise), balance, split 70/10/20 and write data_dir/{train,validation,test}.csv.

    data: None (download the SMS data; offline: find_local_sms_zip's, else the synthetic sample), "synthetic",
    a path (the UCI zip, the TSV, a folder, or your CSV/TSV), or a DataFrame with columns Label, Text.
    dedupe: first drop repeated texts (ignoring case and spacing; beyond/duplicates.py reports them).
    Returns {"train", "validation", "test": Path, "label_names": [...], "source": str, "num_rows": {...}, ...}.
    """
    data_dir = Path(data_dir)
    note = None
    if isinstance(data, pd.DataFrame):
        if not {"Label", "Text"} <= set(data.columns):
            raise DataError(f"the DataFrame needs columns 'Label' and 'Text'; columns found: {list(data.columns)}")
        df = clean_rows(data[["Label", "Text"]].reset_index(drop=True), "the DataFrame")
        df.attrs.update(data.attrs)
        df.attrs.setdefault("source", "a DataFrame passed in")
    elif isinstance(data, str) and data == "synthetic":
        df = make_synthetic_spam_data()
    elif data is not None:
        df = load_spam_dataframe(data, text_column=text_column, label_column=label_column, encoding=encoding)
    elif offline:
        local = find_local_sms_zip(data_dir)
        df = load_spam_dataframe(local) if local is not None else make_synthetic_spam_data()
    else:
        data_file = download_and_unzip_spam_data(SMS_URL, data_dir / "sms_spam_collection.zip",
                                                 data_dir / "sms_spam_collection",
                                                 data_dir / "sms_spam_collection" / "SMSSpamCollection.tsv")
        df = load_spam_dataframe(data_file)
    source = df.attrs.get("source", str(data))
    if df.attrs.get("synthetic"):
        note = df.attrs.get("note", SYNTHETIC_NOTE)
        if verbose:
            print(note)

    class_counts = {str(k): int(v) for k, v in df["Label"].value_counts().sort_index().items()}
    if len(class_counts) < 2:
        raise DataError(f"{source}: the label column holds one class only ({list(class_counts)}); a classifier "
                        f"needs at least two classes")
    num_loaded = len(df)
    if dedupe:
        df = drop_duplicate_texts(df)
    if seed != 123:  # 123 is the chapter's split; another seed reorders the rows before its fixed samples
        df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    if balance:
        df = create_balanced_dataset(df)
    # Class ids in sorted label order: the SMS data gets the chapter's ham -> 0, spam -> 1.
    labels = sorted(df["Label"].unique(), key=lambda v: (isinstance(v, str), v))
    label_names = [str(v) for v in labels]
    df = df.assign(Label=df["Label"].map({v: i for i, v in enumerate(labels)}).astype("int64"))

    train_df, validation_df, test_df = random_split(df, train_frac, validation_frac)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": data_dir / "train.csv", "validation": data_dir / "validation.csv",
             "test": data_dir / "test.csv"}
    for split_name, split in (("train", train_df), ("validation", validation_df), ("test", test_df)):
        with atomic_write(paths[split_name]) as tmp:
            split[["Label", "Text"]].to_csv(tmp, index=None)
    num_rows = {"loaded": num_loaded, "used": len(df), "train": len(train_df),
                "validation": len(validation_df), "test": len(test_df)}
    if verbose:
        print(f"Data: {source}; {num_loaded} rows {class_counts}, "
              f"{'deduplicated, ' if dedupe else ''}{'balanced to ' + str(len(df)) if balance else 'not balanced'}; "
              f"train/validation/test = {num_rows['train']}/{num_rows['validation']}/{num_rows['test']} in {data_dir}")
    return {**paths, "label_names": label_names, "source": source, "num_rows": num_rows,
            "class_counts": class_counts, "balanced": bool(balance), "deduplicated": bool(dedupe),
            "synthetic": bool(df.attrs.get("synthetic")),
            "note": note}
