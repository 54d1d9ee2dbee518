"""What every run sets up first: test mode or not, the device, and the GPT-2 to fine-tune."""

import contextlib
import hashlib
import os
import re
from pathlib import Path

import torch

import gpt_download
import gpt_model
from beyond import weight_sources

WEIGHTS_FORMATS = ("openai", "safetensors", "pytorch")


def is_test_mode(flag=False):
    """True when --test-mode was given or TUTORIAL_TEST_MODE=1: tiny model, no downloads (the one place read)."""
    return bool(flag) or os.environ.get("TUTORIAL_TEST_MODE", "").strip() == "1"


@contextlib.contextmanager
def threads_for_test_mode(test_mode):
    """One torch thread inside the block in test mode (the tiny model's matrices gain nothing from threads, and on
    a busy machine idle-spinning threads cost 10x more than they save); the thread count is restored after."""
    threads = torch.get_num_threads()
    if is_test_mode(test_mode):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpu_has_bf16_units(cpuinfo="/proc/cpuinfo"):
    """True when this CPU multiplies bf16 matrices in hardware (Intel AMX or AVX-512 BF16, read from Linux's
    /proc/cpuinfo): there bf16 runs several times faster than fp32. False elsewhere, and where it cannot tell."""
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def resolve_device(name="auto"):
    """Return the torch.device to train on; "auto" picks CUDA, then Apple's MPS, then the CPU."""
    name = str(name or "auto").lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but PyTorch sees no CUDA GPU here; use --device auto or cpu.")
    if name == "mps" and not mps_ok:
        raise ValueError("--device mps was asked for but Apple's MPS is not available here; use --device auto or cpu.")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"Unknown device {name!r}; choose one of auto, cpu, cuda, mps.")
    return torch.device(name)


def build_model(model_size="gpt2-small (124M)", weights="pretrained", models_dir="gpt2", test_mode=False, *,
                weights_format="openai", seed=None):
    """Return (model, cfg): GPT-2 with OpenAI's weights, random weights, or the tiny offline model in test mode.

    weights_format: "openai" reads the chapter's TensorFlow checkpoint (download_and_load_gpt2); "safetensors"
    reads Hugging Face's copy of the same weights; "pytorch" the book's own state_dict files (rasbt/gpt2-from-
    scratch-pytorch: .pth, or its .safetensors twin when only that is in models_dir); neither needs TensorFlow.
    seed: when given, torch.manual_seed(seed) first, so random (and test-mode) weights are the same every time;
    None leaves seeding to the caller. build_model_with_base also says where the weights came from.
    """
    model, cfg, _base = build_model_with_base(model_size, weights, models_dir, test_mode,
                                              weights_format=weights_format, seed=seed)
    return model, cfg


def build_model_with_base(model_size="gpt2-small (124M)", weights="pretrained", models_dir="gpt2",
                          test_mode=False, *, weights_format="openai", seed=None):
    """(model, cfg, base): build_model's, plus a record of where the weights came from, or None when they cannot
    be rebuilt (random weights without a seed). save_classifier(..., base=base) then stores only what changed.
    """
    if weights not in ("pretrained", "random"):
        raise ValueError(f"Unknown --weights {weights!r}; choose 'pretrained' or 'random'.")
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"Unknown --weights-format {weights_format!r}; choose one of {', '.join(WEIGHTS_FORMATS)}.")
    cfg = gpt_model.get_model_config(model_size)  # a typo in the size fails in test mode too
    if seed is not None:
        torch.manual_seed(seed)
    if is_test_mode(test_mode) or weights == "random":
        # Test mode: a tiny random GPT, seconds on a CPU and no downloads; the numbers it gives mean nothing.
        cfg = dict(gpt_model.TINY_CONFIG) if is_test_mode(test_mode) else cfg
        model = gpt_model.GPTModel(cfg)
        model.eval()
        return model, cfg, None if seed is None else _base_record(model, kind="random", seed=seed, config=cfg)
    # Download (or find) the weights before building the model: a failed download then costs nothing.
    if weights_format == "openai" and (tf_error := weight_sources.tensorflow_import_error()):
        print(f"TensorFlow does not import ({tf_error}), so OpenAI's checkpoint cannot be read; "
              "using the same weights from Hugging Face's model.safetensors instead.")
        weights_format = "safetensors"
    size = gpt_model.model_size_to_download_name(model_size)
    model = gpt_model.GPTModel(cfg)
    if weights_format == "pytorch":
        _load_book_state_dict(model, size, models_dir)
    else:
        load = (gpt_download.download_and_load_gpt2 if weights_format == "openai"
                else weight_sources.download_and_load_gpt2_safetensors)
        _settings, params = load(size, models_dir)
        gpt_model.load_weights_into_gpt(model, params)
    model.eval()
    return model, cfg, _base_record(model, kind="pretrained", model_size=size, weights_format=weights_format,
                                    models_dir=os.fspath(models_dir), files=_base_files(models_dir, size, weights_format))


def _load_book_state_dict(model, size, models_dir):
    """Load the book's PyTorch GPT-2 file into model: the .pth, or the .safetensors twin when only it is here."""
    stem = Path(models_dir) / size / weight_sources.PYTORCH_FILES[size]
    suffix = ".safetensors" if stem.with_suffix(".safetensors").is_file() and not stem.with_suffix(".pth").is_file() \
        else ".pth"
    state = weight_sources.download_and_load_gpt2_pytorch(size, models_dir, suffix=suffix)
    wrong = sorted(k for k, v in model.state_dict().items() if k not in state or state[k].shape != v.shape)
    if wrong:
        raise gpt_download.CheckpointError(f"{stem}{suffix} does not hold GPT-2 {size}'s weights ({len(wrong)} "
                                           f"missing or of another shape, e.g. {wrong[0]}); delete it and "
                                           "download it again.")
    model.load_state_dict(state, strict=False)  # extra entries (the chapter's att.mask buffers) are not weights


# --- what identifies a model's base weights (for classifiers saved as only what training changed) ---

def tensor_sha256(tensor):
    """sha256 of a tensor's raw bytes (and its dtype): equal exactly when the stored numbers are equal."""
    data = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy()).hexdigest() + ":" + str(data.dtype)


def weights_digest(fingerprints, keys):
    """One sha256 for the tensors named by keys, from their tensor_sha256 fingerprints."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(f"{key}={fingerprints[key]}\n".encode())
    return h.hexdigest()


def _base_record(model, **identity):
    """What built the model's weights, plus a fingerprint of each of its tensors (kept in memory only)."""
    return {**identity, "tensor_sha256": {k: tensor_sha256(v) for k, v in model.state_dict().items()}}


def _base_files(models_dir, size, weights_format):
    """{file name: {"size", "sha256"}} of the files the pretrained weights were read from."""
    folder = Path(models_dir) / size
    names = {"openai": gpt_download.GPT2_FILES, "safetensors": ("model.safetensors",),
             "pytorch": (weight_sources.PYTORCH_FILES[size] + ".pth", weight_sources.PYTORCH_FILES[size] + ".safetensors")
             }[weights_format]
    return {name: {"size": (folder / name).stat().st_size, "sha256": gpt_download.file_sha256(folder / name)}
            for name in names if (folder / name).is_file()}


def rebuild_base(base, models_dir=None):
    """(model, its base record) for what a small checkpoint records (random: from its seed; else found or downloaded)."""
    if base["kind"] == "random":
        with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay as they were
            torch.manual_seed(base["seed"])
            model = gpt_model.GPTModel(dict(base["config"]))
        model.eval()
        return model, _base_record(model, **base)
    models_dir = models_dir or base.get("models_dir") or "gpt2"
    model, _cfg, rebuilt = build_model_with_base(base["model_size"], "pretrained", models_dir,
                                                 weights_format=base["weights_format"])
    found, recorded = rebuilt["files"], base.get("files") or {}
    for name in sorted(set(found) & set(recorded)):
        if found[name]["sha256"] != recorded[name]["sha256"]:
            raise gpt_download.CheckpointError(
                f"{Path(models_dir) / base['model_size'] / name} is not the file the classifier was trained on "
                f"(sha256 {found[name]['sha256'][:12]}..., expected {recorded[name]['sha256'][:12]}...); "
                "download the GPT-2 weights again or pass --models-dir with the original files.")
    return model, rebuilt
