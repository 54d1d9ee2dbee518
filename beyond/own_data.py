"""Your own data as a DataFrame with columns Label, Text: the UCI zip or TSV, a folder, or any CSV/TSV.

`load_spam_dataframe` sniffs the layout (the UCI file has no header), decodes non-UTF-8 files (Excel writes
cp1252) with a warning, guesses the text and label columns from common names, and drops empty rows with a count.
"""

import io
import warnings
import zipfile
import zlib
from pathlib import Path

import pandas as pd

from spam_dataset import SMS_LABELS, SMS_MEMBER_NAME, DataError, DataWarning, find_sms_member

# Column names tried, in order, when a user's file does not say which column is which.
TEXT_COLUMN_GUESSES = ("text", "message", "messages", "sms", "msg", "content", "body", "email", "review",
                       "sentence", "v2")
LABEL_COLUMN_GUESSES = ("label", "labels", "class", "category", "target", "type", "spam", "v1", "y")


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file that is not there (also a FileNotFoundError, so either except clause catches it)."""


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


def clean_rows(df, name):
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
    df = clean_rows(df, name)
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
    df = clean_rows(df, name)
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
            info = find_sms_member(zf)
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
