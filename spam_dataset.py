"""From files to DataLoaders: the SMS Spam Collection, balancing, splitting, SpamDataset, a user's own CSV."""

import hashlib
import io
import os
import random
import warnings
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from gpt_download import DownloadError, atomic_write, download_file, is_valid_file

SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_BACKUP_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip"

# The data file inside the archive (SMS Spam Collection v.1). UCI's zip also holds a readme today, so the zip's
# own hash differs between sources; the member's hash does not, so that is what we check.
SMS_MEMBER_NAME = "SMSSpamCollection"
SMS_MEMBER_SIZE = 477907
SMS_MEMBER_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SMS_ZIP_SIZE = 200534  # the data-only archive (the backup mirror's and ../shared's copy)
SMS_ZIP_SHA256 = "e0c5bd54da721b0058bfecedfd96dc0be0a323366ca99d4d694817493f47be90"
SMS_LABELS = ("ham", "spam")  # class id = index: ham -> 0, spam -> 1

# Column names tried, in order, when a user's file does not say which column is which.
TEXT_COLUMN_GUESSES = ("text", "message", "messages", "sms", "msg", "content", "body", "email", "review",
                       "sentence", "v2")
LABEL_COLUMN_GUESSES = ("label", "labels", "class", "category", "target", "type", "spam", "v1", "y")


class DataError(ValueError):
    """A data file or DataFrame the tutorial cannot use; the message names the file and the fix."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file that is not there (also a FileNotFoundError, so either except clause catches it)."""


class DataWarning(UserWarning):
    """Something was fixed on the fly (rows dropped, texts truncated, a non-UTF-8 file decoded)."""


# ---------------------------------------------------------------------------------------------------------
# Download and extraction
# ---------------------------------------------------------------------------------------------------------


def _find_member(zf, name=SMS_MEMBER_NAME):
    """The archive member whose base name is `name` (UCI's zip also holds a readme); None when absent."""
    for info in zf.infolist():
        if not info.is_dir() and info.filename.replace("\\", "/").rsplit("/", 1)[-1] == name:
            return info
    return None


def _read_sms_member(zip_path):
    """The verified bytes of SMSSpamCollection from zip_path, or None when the archive is corrupt or wrong."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = _find_member(zf)
            if info is None or info.file_size != SMS_MEMBER_SIZE:
                return None
            data = zf.read(info)  # checks the CRC: a corrupt member raises BadZipFile
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
        return None
    return data if hashlib.sha256(data).hexdigest() == SMS_MEMBER_SHA256 else None


def download_and_unzip_spam_data(url, zip_path, extracted_path, data_file_path, backup_url=SMS_BACKUP_URL):
    """Fetch the SMS Spam Collection zip and extract its data file to data_file_path; returns that Path."""
    zip_path, extracted_path, data_file_path = Path(zip_path), Path(extracted_path), Path(data_file_path)
    if is_valid_file(data_file_path, SMS_MEMBER_SIZE, SMS_MEMBER_SHA256):
        print(f"{data_file_path} already exists. Skipping download and extraction.")
        return data_file_path
    if data_file_path.exists():
        print(f"{data_file_path} is incomplete or not the SMS Spam Collection; extracting it again.")

    data = _read_sms_member(zip_path) if zip_path.exists() else None
    if data is None:
        if zip_path.exists():
            print(f"{zip_path} is corrupt or truncated; deleting it and downloading it again.")
            zip_path.unlink()
        # No zip hash is pinned: UCI's archive (with a readme) differs from the mirror's; the member is checked.
        download_file(url, zip_path, backup_url, desc=zip_path.name)  # DownloadError when every source fails
        data = _read_sms_member(zip_path)
        if data is None and backup_url:
            # The primary answered 200 with a wrong or truncated archive: try the backup before giving up.
            print(f"{url} gave a corrupt archive; trying {backup_url}")
            zip_path.unlink(missing_ok=True)
            download_file(backup_url, zip_path, desc=zip_path.name)
            data = _read_sms_member(zip_path)
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
    return archive if archive.is_file() and _read_sms_member(archive) is not None else None


# ---------------------------------------------------------------------------------------------------------
# Reading files into a DataFrame with columns "Label", "Text"
# ---------------------------------------------------------------------------------------------------------


def _decode(raw, name, encoding):
    """Bytes -> str: the given encoding, else UTF-8 (BOM allowed), falling back to cp1252 / Latin-1 with a warning."""
    if encoding is not None:
        try:
            return raw.decode(encoding)
        except LookupError:
            raise DataError(f"{name}: unknown encoding {encoding!r}; pass one like 'utf-8' or 'latin-1'") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{name} is not valid {encoding} (byte {e.start}); pass the file's real encoding "
                            f"(--encoding latin-1 or cp1252 are common for Excel files)") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # Excel and Windows tools write cp1252; Latin-1 decodes any byte, so one of the two always works.
    for fallback in ("cp1252", "latin-1"):
        try:
            text = raw.decode(fallback)
        except UnicodeDecodeError:
            continue
        warnings.warn(f"{name} is not UTF-8; read it as {fallback} (pass --encoding / encoding= if the "
                      f"accented characters look wrong)", DataWarning, stacklevel=3)
        return text
    raise DataError(f"{name} is not UTF-8; pass its encoding with --encoding")  # not reached


def _read_bytes(path):
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"data file {path} does not exist; check the path (or pass --data)")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file; pass the CSV/TSV file itself")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {path} is empty; point to a file with a header row and at least two rows")
    return raw


def _looks_like_sms_tsv(text):
    """The UCI layout: no header, each line 'ham<TAB>text' or 'spam<TAB>text'."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    parts = first.split("\t")
    return len(parts) == 2 and parts[0].strip() in SMS_LABELS


def _clean_rows(df, name):
    """Drop rows with an empty/NaN text or a NaN label, say how many; error when nothing is left."""
    empty_text = df["Text"].isna() | (df["Text"].astype(str).str.strip() == "")
    no_label = df["Label"].isna()
    bad = empty_text | no_label
    if bad.all():
        raise DataError(f"{name}: every row has an empty text or label; check the column choice "
                        f"(--text-column / --label-column)")
    if bad.any():
        warnings.warn(f"{name}: dropped {int(empty_text.sum())} row(s) with an empty or missing text and "
                      f"{int((no_label & ~empty_text).sum())} with a missing label", DataWarning, stacklevel=3)
        df = df[~bad].reset_index(drop=True)
    return df


def _read_sms_tsv(text, name):
    """Read the SMSSpamCollection TSV exactly as the chapter does (5572 rows with pandas' default quoting)."""
    df = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=["Label", "Text"])
    unexpected = sorted(set(df["Label"].dropna().astype(str)) - set(SMS_LABELS))
    if unexpected:
        shown = ", ".join(repr(v) for v in unexpected[:5])
        raise DataError(f"{name}: labels must be 'ham' or 'spam' but found {shown}; fix those lines "
                        f"(or give the file a header row and use --text-column / --label-column)")
    df = _clean_rows(df, name)
    df.attrs["source"] = f"SMS Spam Collection v.1 (UCI) from {name}"
    df.attrs["is_sms"] = True
    return df


def _pick_column(columns, wanted, guesses, kind, name):
    """The column the user named, or the first common name found (case-insensitive)."""
    by_lower = {str(c).strip().lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if str(wanted).strip().lower() in by_lower:
            return by_lower[str(wanted).strip().lower()]
        raise DataError(f"{name} has no {kind} column {wanted!r}; columns found: {list(columns)}")
    for guess in guesses:
        if guess in by_lower:
            return by_lower[guess]
    flag = "--text-column" if kind == "text" else "--label-column"
    raise DataError(f"{name} has no {kind} column I recognise; columns found: {list(columns)}; "
                    f"name it with {flag} (text_column= / label_column= in Python)")


def _read_user_table(text, name, text_column, label_column, sep):
    """A user's CSV/TSV with a header row -> columns Label, Text."""
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {name} is empty; it needs a header row and rows of data") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{name} could not be parsed as {'TSV' if sep == chr(9) else 'CSV'} ({e}); "
                        f"check the separator and quoting") from None
    text_col = _pick_column(df.columns, text_column, TEXT_COLUMN_GUESSES, "text", name)
    label_col = _pick_column(df.columns, label_column, LABEL_COLUMN_GUESSES, "label", name)
    if text_col == label_col:
        raise DataError(f"{name}: the text and label columns are both {text_col!r}; name two different columns")
    if len(df) == 0:
        raise DataError(f"data file {name} has a header but no rows; add data rows")
    df = pd.DataFrame({"Label": df[label_col], "Text": df[text_col]})
    if df["Label"].dtype == object:  # " spam" and "spam" are the same class
        df["Label"] = df["Label"].map(lambda v: v.strip() if isinstance(v, str) else v)
        df.loc[df["Label"] == "", "Label"] = None
    df = _clean_rows(df, name)
    df["Text"] = df["Text"].astype(str)
    df.attrs["source"] = f"your data file {name} (text column {text_col!r}, label column {label_col!r})"
    df.attrs["is_sms"] = False
    return df


def _parse_text(text, name, text_column, label_column, suffix, is_sms_name=False):
    """Decide between the UCI TSV layout and a user's table with a header, then read it."""
    if text_column is None and label_column is None and (is_sms_name or _looks_like_sms_tsv(text)):
        return _read_sms_tsv(text, name)
    if suffix in (".tsv", ".tab"):
        sep = "\t"
    elif suffix == ".csv":
        sep = ","
    else:
        sep = "\t" if "\t" in text.split("\n", 1)[0] else ","
    return _read_user_table(text, name, text_column, label_column, sep)


def _load_zip(raw, path, text_column, label_column, encoding):
    """The SMSSpamCollection member of a zip archive's bytes (raw, read from path) -> Label, Text."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            info = _find_member(zf)
            if info is None:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
                raise DataError(f"{path} holds no {SMS_MEMBER_NAME} file (found {names}); pass the data file "
                                f"itself or the UCI archive")
            raw = zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"{path} is not a readable zip archive ({e}); delete it and download it again") from None
    return _parse_text(_decode(raw, f"{path}:{info.filename}", encoding), f"{path}", text_column, label_column,
                       ".tsv", is_sms_name=True)


def _find_in_folder(folder):
    """The data file inside a folder: the chapter's layout first, then the zip."""
    folder = Path(folder)
    candidates = [folder / "SMSSpamCollection.tsv", folder / "SMSSpamCollection",
                  folder / "sms_spam_collection" / "SMSSpamCollection.tsv",
                  folder / "sms_spam_collection" / "SMSSpamCollection",
                  folder / "sms_spam_collection.zip"]
    candidates += sorted(folder.glob("*.zip"))
    for candidate in candidates:
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    raise DataFileNotFoundError(f"folder {folder} holds no SMSSpamCollection(.tsv) or sms_spam_collection.zip; "
                                f"pass the data file itself")


def load_spam_dataframe(path, text_column=None, label_column=None, encoding=None):
    """Read the UCI zip, the SMSSpamCollection TSV, a folder holding them, or a user's CSV/TSV -> Label, Text."""
    path = Path(path)
    if path.is_dir():
        path = _find_in_folder(path)
    raw = _read_bytes(path)
    if zipfile.is_zipfile(io.BytesIO(raw)):  # the bytes already read: no second pass over the file
        return _load_zip(raw, path, text_column, label_column, encoding)
    return _parse_text(_decode(raw, str(path), encoding), str(path), text_column, label_column,
                       path.suffix.lower(), is_sms_name=path.name in ("SMSSpamCollection", "SMSSpamCollection.tsv"))


# ---------------------------------------------------------------------------------------------------------
# Balancing and splitting
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# A synthetic sample for offline test runs (clearly not real data)
# ---------------------------------------------------------------------------------------------------------

SYNTHETIC_NOTE = ("NOTE: using a small SYNTHETIC spam/ham sample generated by make_synthetic_spam_data(); it "
                  "is not the SMS Spam Collection and its accuracies mean nothing about real spam.")

_SPAM_TEMPLATES = (
    "{win}! You have been selected to receive a {prize}. Call {phone} now to claim. T&Cs apply.",
    "FREE entry into our weekly competition to win a {prize}. Text {word} to {short} to enter. {rate}",
    "URGENT! Your mobile number has won {money} in our prize draw. To claim call {phone} before {day}.",
    "Congratulations! You've won a {prize}. Reply {word} to {short} to collect. {rate}",
    "Your account has been credited with a {money} bonus. Claim at {url} within 24hrs",
    "Get {pct}% off {product} this weekend only! Visit {url} or txt {word} to {short}. STOP to opt out",
    "You are a WINNER! Claim your {prize} now, call {phone}. Ref: {code}",
    "Final notice: your {money} reward expires {day}. Txt {word} to {short} now! {rate}",
    "Cash loans up to {money} approved in minutes, no credit check! Reply {word} to {short}",
)
_HAM_TEMPLATES = (
    "Hey, are we still on for {meal} {when}?",
    "I'll be home around {time}, can you pick up some {item} on the way?",
    "Sorry I missed your call, I was in a meeting. I'll call you back {when}.",
    "Happy birthday {name}! Hope you have a great day :)",
    "Ok, see you at the {place} at {time}.",
    "Did you finish the {task}? {name} was asking about it.",
    "Running a bit late, traffic is terrible. Be there in {mins} mins.",
    "Thanks for {meal} yesterday, it was really nice to catch up.",
    "Can you send me the notes from {subject} class?",
    "Mum says dinner is at {time}, don't be late",
    "{name} is coming over {when}, do we still have {item}?",
)
_FILLERS = {
    "win": ["WINNER", "Congratulations", "Great news", "You won"],
    "prize": ["free iPhone", "holiday for 2", "$1000 gift card", "brand new car", "Nokia phone", "cash prize"],
    "phone": ["09061701461", "08000930705", "09050003091", "08712300220", "09066364589"],
    "word": ["WIN", "CLAIM", "YES", "PRIZE", "GO", "FREE"],
    "short": ["87121", "80062", "85069", "61610", "83600"],
    "rate": ["Std txt rate applies.", "150p/msg.", "18+ only.", "Msg&data rates may apply."],
    "money": ["£1000", "£2000", "$500", "£250 cash", "$5000"],
    "day": ["today", "midnight", "Friday", "the end of the week"],
    "url": ["www.win-now.example", "claim.example.com", "www.free-prize.example"],
    "pct": ["50", "70", "80", "90"],
    "product": ["ringtones", "all phones", "designer watches", "pills", "our premium plan"],
    "code": ["X29", "B4K7", "Q1Z", "P88T"],
    "meal": ["lunch", "dinner", "coffee", "breakfast", "drinks"],
    "when": ["tomorrow", "tonight", "later", "on Saturday", "next week"],
    "time": ["6", "7:30", "half 8", "noon", "9ish"],
    "item": ["milk", "bread", "eggs", "coffee", "pasta"],
    "name": ["Sam", "Alex", "Jo", "Chris", "Priya", "Tom", "Mia"],
    "place": ["station", "cafe", "library", "gym", "usual place"],
    "task": ["report", "essay", "slides", "washing up", "homework"],
    "mins": ["5", "10", "15", "20"],
    "subject": ["maths", "history", "biology", "physics"],
}


def make_synthetic_spam_data(n_per_class=150, seed=123):
    """A small generated spam/ham DataFrame (Label, Text) for offline runs; deterministic, and labelled synthetic."""
    if n_per_class < 1:
        raise DataError(f"n_per_class must be at least 1, not {n_per_class}")
    rng = random.Random(seed)

    def fill(template):
        return template.format(**{key: rng.choice(values) for key, values in _FILLERS.items()})

    rows = [("spam", fill(rng.choice(_SPAM_TEMPLATES))) for _ in range(n_per_class)]
    rows += [("ham", fill(rng.choice(_HAM_TEMPLATES))) for _ in range(n_per_class)]
    rng.shuffle(rows)
    df = pd.DataFrame(rows, columns=["Label", "Text"])
    df.attrs["source"] = f"SYNTHETIC spam/ham sample (make_synthetic_spam_data, seed {seed}), not real data"
    df.attrs["synthetic"] = True
    df.attrs["note"] = SYNTHETIC_NOTE
    return df


# ---------------------------------------------------------------------------------------------------------
# From any source to train.csv / validation.csv / test.csv
# ---------------------------------------------------------------------------------------------------------


def prepare_spam_splits(data=None, data_dir="data", *, offline=False, text_column=None, label_column=None,
                        encoding=None, balance=True, train_frac=0.7, validation_frac=0.1, verbose=True,
                        dedupe=False, seed=123):
    """Load (or download, or synthesise), balance, split 70/10/20 and write data_dir/{train,validation,test}.csv.

    data: None (download the SMS data; offline: find_local_sms_zip's, else the synthetic sample), "synthetic",
    a path (the UCI zip, the TSV, a folder, or your CSV/TSV), or a DataFrame with columns Label, Text.
    dedupe: first drop repeated texts (ignoring case and spacing; beyond/duplicates.py reports them). seed: 123
    is the chapter's split; another seed reorders the rows first, so the chapter's fixed samples pick others.
    Returns {"train", "validation", "test": Path, "label_names": [...], "source": str, "num_rows": {...}, ...}.
    """
    data_dir = Path(data_dir)
    note = None
    if isinstance(data, pd.DataFrame):
        if not {"Label", "Text"} <= set(data.columns):
            raise DataError(f"the DataFrame needs columns 'Label' and 'Text'; columns found: {list(data.columns)}")
        df = _clean_rows(data[["Label", "Text"]].reset_index(drop=True), "the DataFrame")
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
    if dedupe:  # the same rule as beyond.duplicates.drop_duplicate_texts (this module may not import it)
        df = df[~df["Text"].astype(str).str.lower().str.split().str.join(" ").duplicated()].reset_index(drop=True)
    if seed != 123:
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
            "class_counts": class_counts, "balanced": bool(balance), "deduplicated": bool(dedupe), "synthetic": bool(df.attrs.get("synthetic")),
            "note": note}


# ---------------------------------------------------------------------------------------------------------
# Dataset and loaders
# ---------------------------------------------------------------------------------------------------------


def _encode(tokenizer, text):
    """Token ids of a message; a literal "<|endoftext|>" inside an SMS is ordinary text, not a special token."""
    try:
        return tokenizer.encode(text, disallowed_special=())
    except TypeError:  # a tokenizer without tiktoken's keyword
        return tokenizer.encode(text)


def read_split(csv_file):
    """A split written by prepare_spam_splits (a CSV path or a DataFrame) with integer labels and text; checked."""
    if isinstance(csv_file, pd.DataFrame):
        data, name = csv_file.reset_index(drop=True), "the DataFrame"
    else:
        name = str(csv_file)
        try:
            data = pd.read_csv(io.StringIO(_decode(_read_bytes(csv_file), name, None)))
        except pd.errors.EmptyDataError:
            raise DataError(f"data file {name} is empty; write it with prepare_spam_splits()") from None
    missing = [c for c in ("Label", "Text") if c not in data.columns]
    if missing:
        raise DataError(f"{name} has no {' or '.join(repr(c) for c in missing)} column; columns found: "
                        f"{list(data.columns)}; write it with prepare_spam_splits() (columns Label, Text)")
    if len(data) == 0:
        raise DataError(f"{name} has a header but no rows; the split is empty, so use more data")
    data = _clean_rows(data, name)
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


def _count_truncated(encoded_texts, max_length, source):
    """How many texts max_length cuts, said in a warning too (the chapter truncates silently; a user should know)."""
    if int(max_length) < 1:
        raise DataError(f"max_length must be at least 1, not {max_length}")
    cut = sum(len(ids) > max_length for ids in encoded_texts)
    if cut:
        name = "the DataFrame" if isinstance(source, pd.DataFrame) else str(source)
        warnings.warn(f"{name}: {cut} of {len(encoded_texts)} texts were longer than max_length={max_length} "
                      "tokens and were truncated", DataWarning, stacklevel=3)
    return cut


class SpamDataset(Dataset):
    """The chapter's dataset: token ids of every text, truncated to and padded up to one max_length."""

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=50256, *, pad=True):
        self.data = read_split(csv_file)  # a clear error for a missing, empty or malformed file
        # Pre-tokenize texts
        self.encoded_texts = [_encode(tokenizer, text) for text in self.data["Text"]]
        self.labels = [int(label) for label in self.data["Label"]]
        self.pad_token_id = pad_token_id
        self.num_truncated = 0

        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            self.max_length = int(max_length)
            self.num_truncated = _count_truncated(self.encoded_texts, self.max_length, csv_file)
            # Truncate sequences if they are longer than max_length
            self.encoded_texts = [encoded_text[:self.max_length] for encoded_text in self.encoded_texts]
        if pad:  # pad=False (bonus: per-batch padding) leaves the padding to the collate function
            # Pad sequences to the longest sequence
            self.encoded_texts = [encoded_text + [pad_token_id] * (self.max_length - len(encoded_text))
                                  for encoded_text in self.encoded_texts]

    def __getitem__(self, index):
        encoded = self.encoded_texts[index]
        label = self.labels[index]
        return torch.tensor(encoded, dtype=torch.long), torch.tensor(label, dtype=torch.long)

    def __len__(self):
        return len(self.data)

    def _longest_encoded_length(self):
        return max(len(encoded_text) for encoded_text in self.encoded_texts)


def pad_batch(batch, pad_token_id=50256):
    """Collate (ids, label) pairs, padding ids to the longest in this batch: [b, t] ids and [b] labels."""
    longest = max(len(ids) for ids, _ in batch)
    inputs = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    for i, (ids, _) in enumerate(batch):
        inputs[i, :len(ids)] = ids
    return inputs, torch.stack([label for _, label in batch])


class _PadCollate:
    """A picklable collate function (num_workers > 0 needs one) that pads with a given id."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, batch):
        return pad_batch(batch, self.pad_token_id)


def create_data_loaders(train_csv, val_csv, test_csv, tokenizer, batch_size=8, num_workers=0, max_length=None,
                        seed=123, per_batch_padding=False, pad_token_id=50256):
    """The chapter's three DataLoaders; val/test use the training max_length; returns (train, val, test)."""
    torch.manual_seed(seed)
    pad = not per_batch_padding
    train_dataset = SpamDataset(train_csv, tokenizer, max_length=max_length, pad_token_id=pad_token_id, pad=pad)
    val_dataset = SpamDataset(val_csv, tokenizer, max_length=train_dataset.max_length, pad_token_id=pad_token_id,
                              pad=pad)
    test_dataset = SpamDataset(test_csv, tokenizer, max_length=train_dataset.max_length,
                               pad_token_id=pad_token_id, pad=pad)
    if len(train_dataset) < batch_size:
        raise DataError(f"the training split has {len(train_dataset)} rows, fewer than batch_size={batch_size}, "
                        f"so it would give no batch (drop_last); use more data or a smaller --batch-size")
    collate_fn = _PadCollate(pad_token_id) if per_batch_padding else None
    train_loader = DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              drop_last=True, collate_fn=collate_fn)
    val_loader = DataLoader(dataset=val_dataset, batch_size=batch_size, num_workers=num_workers, drop_last=False,
                            collate_fn=collate_fn)
    test_loader = DataLoader(dataset=test_dataset, batch_size=batch_size, num_workers=num_workers,
                             drop_last=False, collate_fn=collate_fn)
    return train_loader, val_loader, test_loader
