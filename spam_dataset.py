"""The SMS data to token ids, as chapter 6 does it: download, balance, split, and the chapter's SpamDataset.

Kept robust where a learner benefits: the book's backup mirror, the data file found in the archive by name and
checked against its known hash, nothing half-written, and one clear sentence for a file the dataset cannot use.
Reading your own CSV/TSV, the synthetic sample, the split files and the DataLoaders live in `beyond/`.
"""

import hashlib
import warnings
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from gpt_download import DownloadError, atomic_write, download_file, is_valid_file

SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_BACKUP_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip"

# The data file inside the archive (SMS Spam Collection v.1). UCI's zip also holds a readme today, so the zip's
# own hash differs between sources; the member's hash does not, so that is what we check.
SMS_MEMBER_NAME = "SMSSpamCollection"
SMS_MEMBER_SIZE = 477907
SMS_MEMBER_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_ZIP_SHA256 = "e0c5bd54da721b0058bfecedfd96dc0be0a323366ca99d4d694817493f47be90"  # the data-only archive
SMS_LABELS = ("ham", "spam")  # class id = index: ham -> 0, spam -> 1


class DataError(ValueError):
    """A data file or DataFrame the tutorial cannot use; the message names the file and the fix."""


class DataWarning(UserWarning):
    """Something was fixed on the fly (rows dropped, texts truncated, a non-UTF-8 file decoded)."""


# --------------------------------------------------------------------------------------------- download

def download_and_unzip_spam_data(url, zip_path, extracted_path, data_file_path, backup_url=SMS_BACKUP_URL):
    """Fetch the SMS Spam Collection zip and extract its data file to data_file_path; returns that Path."""
    zip_path, extracted_path, data_file_path = Path(zip_path), Path(extracted_path), Path(data_file_path)
    if is_valid_file(data_file_path, SMS_MEMBER_SIZE, SMS_MEMBER_SHA256):
        print(f"{data_file_path} already exists. Skipping download and extraction.")
        return data_file_path
    if data_file_path.exists():
        print(f"{data_file_path} is incomplete or not the SMS Spam Collection; extracting it again.")

    data = read_sms_member(zip_path) if zip_path.exists() else None
    if data is None:
        if zip_path.exists():
            print(f"{zip_path} is corrupt or truncated; deleting it and downloading it again.")
            zip_path.unlink()
        # No zip hash is pinned: UCI's archive (with a readme) differs from the mirror's; the member is checked.
        download_file(url, zip_path, backup_url, desc=zip_path.name)  # DownloadError when every source fails
        data = read_sms_member(zip_path)
        if data is None and backup_url:
            # The primary answered 200 with a wrong or truncated archive: try the backup before giving up.
            print(f"{url} gave a corrupt archive; trying {backup_url}")
            zip_path.unlink(missing_ok=True)
            download_file(backup_url, zip_path, desc=zip_path.name)
            data = read_sms_member(zip_path)
        if data is None:
            zip_path.unlink(missing_ok=True)
            raise DownloadError(
                f"no source ({url}, {backup_url}) gave an archive holding a valid {SMS_MEMBER_NAME}; download "
                f"it by hand from {SMS_URL} and save it as {zip_path}")

    # Only the one member, written under our own name: a hostile member path ("../x") is never used.
    extracted_path.mkdir(parents=True, exist_ok=True)
    with atomic_write(data_file_path) as tmp:
        tmp.write_bytes(data)
    print(f"File downloaded and saved as {data_file_path}")
    return data_file_path


def find_sms_member(zf, name=SMS_MEMBER_NAME):
    """The archive member whose base name is `name` (UCI's zip also holds a readme); None when absent."""
    for info in zf.infolist():
        if not info.is_dir() and info.filename.replace("\\", "/").rsplit("/", 1)[-1] == name:
            return info
    return None


def read_sms_member(zip_path):
    """The verified bytes of SMSSpamCollection from zip_path, or None when the archive is corrupt or wrong."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = find_sms_member(zf)
            if info is None or info.file_size != SMS_MEMBER_SIZE:
                return None
            data = zf.read(info)  # checks the CRC: a corrupt member raises BadZipFile
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
        return None
    return data if hashlib.sha256(data).hexdigest() == SMS_MEMBER_SHA256 else None


# --------------------------------------------------------------------------------------------- balance and split

def create_balanced_dataset(df):
    """Undersample every class to the smallest one (the chapter's: ham sampled to #spam, then the spam rows)."""
    if "Label" not in df.columns:
        raise DataError(f"the DataFrame has no 'Label' column; columns found: {list(df.columns)}")
    counts = df["Label"].value_counts()
    if len(counts) < 2:
        only = repr(counts.index[0]) if len(counts) else "none"
        raise DataError(f"column 'Label' holds one class only ({only}); balancing (and a classifier) needs at "
                        f"least two, so add examples of the other class(es)")
    num_smallest = int(counts.min())
    labels = sorted(counts.index, key=str)
    # The chapter keeps the spam rows as they are and samples ham to their number (a shuffle when the counts are
    # equal): here the last smallest class plays spam's part. Sorted order gives the chapter's rows for the SMS
    # data: 747 sampled ham, then the spam.
    reference = [label for label in labels if counts[label] == num_smallest][-1]
    parts = []
    for label in labels:
        subset = df[df["Label"] == label]
        parts.append(subset if label == reference else subset.sample(num_smallest, random_state=123))
    return pd.concat(parts)


def random_split(df, train_frac, validation_frac):
    """Shuffle (random_state=123) and cut into train / validation / test DataFrames, as the chapter does."""
    if not (0 < train_frac <= 1 and 0 <= validation_frac <= 1 and train_frac + validation_frac <= 1 + 1e-9):
        raise DataError(f"split fractions train={train_frac}, validation={validation_frac} must be between 0 and "
                        f"1 and sum to at most 1")
    df = df.sample(frac=1, random_state=123).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)
    train_df = df[:train_end]
    validation_df = df[train_end:validation_end]
    test_df = df[validation_end:]
    # An empty split that was asked for breaks training or evaluation much later; say so now.
    wanted = {"train": True, "validation": validation_frac > 0, "test": train_frac + validation_frac < 1 - 1e-9}
    for split_name, split in (("train", train_df), ("validation", validation_df), ("test", test_df)):
        if wanted[split_name] and len(split) == 0:
            raise DataError(f"{len(df)} rows are too few for a {train_frac:g}/{validation_frac:g} split: the "
                            f"{split_name} split is empty; add rows (or skip balancing with --no-balance)")
    return train_df, validation_df, test_df


# --------------------------------------------------------------------------------------------- the dataset

class SpamDataset(Dataset):
    """The chapter's dataset: token ids of every text, truncated to and padded up to one max_length."""

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=50256):
        self.data = read_split(csv_file)  # a clear error for a missing, empty or malformed file
        # Pre-tokenize texts ("<|endoftext|>" typed inside an SMS is plain text, never the padding token)
        self.encoded_texts = [tokenizer.encode(text, disallowed_special=()) for text in self.data["Text"]]

        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            self.max_length = max_length
            self._warn_if_truncating(csv_file)
            # Truncate sequences if they are longer than max_length
            self.encoded_texts = [encoded_text[:self.max_length] for encoded_text in self.encoded_texts]

        # Pad sequences to the longest sequence
        self.encoded_texts = [encoded_text + [pad_token_id] * (self.max_length - len(encoded_text))
                              for encoded_text in self.encoded_texts]

    def __getitem__(self, index):
        encoded = self.encoded_texts[index]
        label = self.data.iloc[index]["Label"]
        return torch.tensor(encoded, dtype=torch.long), torch.tensor(label, dtype=torch.long)

    def __len__(self):
        return len(self.data)

    def _longest_encoded_length(self):
        return max(len(encoded_text) for encoded_text in self.encoded_texts)

    def _warn_if_truncating(self, source):
        """Say how many texts max_length cuts (the chapter cuts silently; a learner should know)."""
        if int(self.max_length) < 1:
            raise DataError(f"max_length must be at least 1, not {self.max_length}")
        cut = sum(len(ids) > self.max_length for ids in self.encoded_texts)
        if cut:
            name = "the DataFrame" if isinstance(source, pd.DataFrame) else str(source)
            warnings.warn(f"{name}: {cut} of {len(self.encoded_texts)} texts were longer than "
                          f"max_length={self.max_length} tokens and were truncated", DataWarning, stacklevel=3)


def read_split(csv_file):
    """A split CSV (a path, or a DataFrame) with integer labels and non-empty texts, or one clear DataError."""
    try:
        data = csv_file.reset_index(drop=True) if isinstance(csv_file, pd.DataFrame) else pd.read_csv(csv_file)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {csv_file} is empty; write the splits first (random_split, to_csv)") from None
    name = "the DataFrame" if isinstance(csv_file, pd.DataFrame) else str(csv_file)
    missing = [c for c in ("Label", "Text") if c not in data.columns]
    if missing:
        raise DataError(f"{name} has no {' or '.join(repr(c) for c in missing)} column; columns found: "
                        f"{list(data.columns)}; write it with columns Label, Text as the chapter does")
    if len(data) == 0:
        raise DataError(f"{name} has a header but no rows; the split is empty, so use more data")
    keep = data["Text"].notna() & (data["Text"].astype(str).str.strip() != "") & data["Label"].notna()
    if not keep.all():
        warnings.warn(f"{name}: dropped {int((~keep).sum())} row(s) with an empty text or label", DataWarning,
                      stacklevel=3)
        data = data[keep].reset_index(drop=True)
    if len(data) == 0:
        raise DataError(f"{name}: every row has an empty text or label; check the file's columns")
    if not pd.api.types.is_integer_dtype(data["Label"]):
        numeric = pd.to_numeric(data["Label"], errors="coerce")
        if numeric.isna().any() or (numeric % 1 != 0).any():
            shown = sorted(set(map(str, data["Label"][numeric.isna() | (numeric % 1 != 0)])))[:5]
            raise DataError(f"{name}: column 'Label' must hold integer class ids but holds {shown}; map the "
                            f"names first, e.g. df['Label'] = df['Label'].map({{'ham': 0, 'spam': 1}})")
        data = data.assign(Label=numeric.astype("int64"))
    if (data["Label"] < 0).any():
        raise DataError(f"{name}: column 'Label' holds negative class ids; use ids 0, 1, ... (one per class)")
    return data.assign(Text=data["Text"].astype(str))
