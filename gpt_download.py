"""Pretrained GPT-2 onto disk and into memory, as chapter 5 does it: `download_and_load_gpt2(model_size, models_dir)`.

Kept robust: a second run needs no network, a broken download resumes, no file is left half-written, the book's
backup mirror is tried, and a failure is one sentence saying what to do. TensorFlow is imported only when needed.
"""

import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

GPT2_SIZES = ("124M", "355M", "774M", "1558M")
GPT2_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
              "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
GPT2_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
GPT2_BACKUP_BASE_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"
# The BPE files are the same for every size; these are the hashes tiktoken checks for "gpt2".
BPE_SHA256 = {"encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
              "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Every source failed; the message names each URL tried, its error, and where to put the file by hand."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match its settings; the message says which and what to do."""


def download_and_load_gpt2(model_size, models_dir, base_url=GPT2_BASE_URL, backup_base_url=GPT2_BACKUP_BASE_URL):
    """Download OpenAI's GPT-2 files into models_dir/<model_size>/ (skipping valid ones); returns (settings, params)."""
    if model_size not in GPT2_SIZES:
        raise ValueError(f"Unknown GPT-2 model_size {model_size!r}: choose one of {', '.join(GPT2_SIZES)} "
                         f"(gpt_model.model_size_to_download_name('gpt2-small (124M)') gives '124M').")
    model_dir = Path(models_dir) / model_size
    for filename in GPT2_FILES:
        backup = f"{backup_base_url.rstrip('/')}/{model_size}/{filename}" if backup_base_url else None
        download_file(f"{base_url.rstrip('/')}/{model_size}/{filename}", model_dir / filename, backup,
                      sha256=BPE_SHA256.get(filename))
    settings = load_gpt2_settings(model_dir / "hparams.json")
    params = load_gpt2_params_from_tf_ckpt(_latest_checkpoint(model_dir), settings)
    return settings, params


def load_gpt2_settings(path):
    """Read hparams.json -> dict with n_vocab, n_ctx, n_embd, n_head, n_layer."""
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # missing, unreadable, or not JSON (a proxy's HTML page, a cut file)
        raise CheckpointError(f"{path} is not readable JSON ({type(err).__name__}): delete it and run "
                              f"download_and_load_gpt2 again.") from None
    missing = [k for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer") if k not in settings]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: delete it and run download_and_load_gpt2 again.")
    return settings


# --------------------------------------------------------------------------------------------- downloads

def download_file(url, destination, backup_url=None, *, expected_size=None, sha256=None, timeout=30, desc=None):
    """Download url (else backup_url) to destination unless a valid copy is already there; returns the Path.

    The bytes go to `destination.part` and are renamed into place only when complete and checked, so the
    destination is either absent or whole. A `.part` left by an interrupted run is resumed with an HTTP Range request.
    """
    destination = Path(destination)
    if is_valid_file(destination, expected_size, sha256):
        return destination  # no network at all: a second run works offline
    if destination.exists():
        destination.unlink()  # present but wrong size/hash: never leave it to fail later
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    if part.exists() and expected_size is not None and part.stat().st_size >= expected_size:
        if is_valid_file(part, expected_size, sha256):
            os.replace(part, destination)  # an earlier run got every byte but stopped before the rename
            return destination
        part.unlink()

    errors = []
    for source in [u for u in (url, backup_url) if u]:
        try:
            total = _fetch(source, part, timeout, desc or destination.name)
            size = part.stat().st_size
            if total is not None and size != total:
                if size > total:
                    part.unlink()  # not a prefix of this file: start over next time
                raise OSError(f"got {size} bytes, the server announced {total}")
            if expected_size is not None and size != expected_size:
                part.unlink()
                raise OSError(f"got {size} bytes, expected {expected_size}")
            if sha256 is not None and file_sha256(part) != sha256.lower():
                part.unlink()
                raise OSError(f"sha256 mismatch (expected {sha256})")
            os.replace(part, destination)
            return destination
        except (OSError, ValueError, http.client.HTTPException) as err:
            errors.append(f"{source} ({_describe(err, timeout)})")

    resume = " (the partial download will resume)" if part.exists() else ""
    raise DownloadError(f"Could not download {destination.name}: tried {'; '.join(errors)}; check your connection "
                        f"and run again{resume}, or download it by hand from one of these URLs and save it as "
                        f"{destination.resolve()}.")


def _fetch(url, part, timeout, desc):
    """Download url into the .part file, resuming it with an HTTP Range request; returns the total size or raises."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "gpt2-spam-classifier"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # our partial file does not fit this server's copy: start over
            err.close()
            part.unlink()
            return _fetch(url, part, timeout, desc)
        raise
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if offset and response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise OSError(f"the server answered the resume request with a wrong range "
                              f"({response.headers.get('Content-Range')!r})")
            total = int(match.group(2)) if match.group(2) != "*" else (offset + length if length else None)
            mode = "ab"
        else:  # 200 to a Range request means the server ignored it: start over
            offset, total, mode = 0, length, "wb"
        received = 0
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=desc) as bar:
            while block := response.read(_CHUNK):
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if length is not None and received < length:
        raise OSError(f"connection closed after {offset + received} of {offset + length} bytes")
    return total if total is not None else offset + received


def _describe(err, timeout):
    """A short human description of a download failure."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s (timeout)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (no network or server down)"
    return str(reason) or type(reason).__name__


def is_valid_file(path, expected_size=None, sha256=None):
    """True when the file exists and matches the size and hash we know (size first: no hashing of wrong files)."""
    path = Path(path)
    if not path.is_file() or (expected_size is not None and path.stat().st_size != expected_size):
        return False
    return sha256 is None or file_sha256(path) == sha256.lower()


def file_sha256(path):
    """Hex sha256 of a file, read in chunks so multi-GB checkpoints do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temp file's Path beside path; on success rename it over path, on any error (Ctrl-C too) delete it.

    So a reader finds the old file or the complete new one, never half of it. The one writer of files for the
    package: `with atomic_write(path) as tmp: torch.save(obj, tmp)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)  # mkstemp makes the file private (0600): give it the mode a plain open() would
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- the TF checkpoint

def load_gpt2_params_from_tf_ckpt(ckpt_path, settings):
    """Read OpenAI's TF checkpoint (names model/wte, model/h0/attn/c_attn/w, ...) into the chapter's params dict."""
    try:
        import tensorflow as tf  # here only: TensorFlow is slow to import and optional
    except ImportError:
        raise ImportError("Reading OpenAI's TF checkpoint needs TensorFlow: pip install tensorflow-cpu (or "
                          "tensorflow on macOS), or load model.safetensors with beyond.weight_sources.") from None

    params = {"blocks": [{} for _ in range(settings["n_layer"])]}
    try:
        for name, _ in tf.train.list_variables(str(ckpt_path)):
            array = np.squeeze(tf.train.load_variable(str(ckpt_path), name))  # [1, in, out] -> [in, out]
            parts = name.split("/")[1:]  # skip the leading "model"
            target = params
            if re.fullmatch(r"h\d+", parts[0]):
                layer = int(parts[0][1:])
                if layer >= len(params["blocks"]):
                    raise CheckpointError(f"{ckpt_path} holds layer {layer} but the settings say "
                                          f"n_layer={settings['n_layer']}: use the hparams.json that came with it.")
                target = params["blocks"][layer]
            for key in parts[1:-1]:  # "h0/attn/c_attn/w" -> block 0's attn/c_attn; "ln_f/g" -> top-level "g"
                target = target.setdefault(key, {})
            target[parts[-1]] = array
    except (tf.errors.OpError, OSError, ValueError, IndexError) as err:  # NotFoundError, DataLossError, ...
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"Could not read the GPT-2 checkpoint {ckpt_path} ({type(err).__name__}: "
                              f"{first_line(err)}): delete the folder {Path(ckpt_path).parent} "
                              f"and run download_and_load_gpt2 again.") from None
    return params  # load_weights_into_gpt checks every shape against the model before copying


def _latest_checkpoint(model_dir):
    """The checkpoint prefix named by the TF 'checkpoint' file (like tf.train.latest_checkpoint, without TF)."""
    name = "model.ckpt"
    state = model_dir / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.+)"', state.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            name = Path(match.group(1)).name  # OpenAI's file holds a relative name; moved folders may not
    return str(model_dir / name)


def first_line(err, default=""):
    """The first line of an exception's message (or default when it has none): errors shown in one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else default
