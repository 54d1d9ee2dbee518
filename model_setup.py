"""What every run sets up first: test mode or not, the device, and the GPT-2 to fine-tune."""

import os

import torch

import gpt_download
import gpt_model

WEIGHTS_FORMATS = ("openai", "safetensors")


def is_test_mode(flag=False):
    """True when --test-mode was given or TUTORIAL_TEST_MODE=1: tiny model, no downloads (the one place read)."""
    return bool(flag) or os.environ.get("TUTORIAL_TEST_MODE", "").strip() == "1"


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
    reads Hugging Face's copy of the same weights, no TensorFlow needed. seed: when given, torch.manual_seed(seed)
    first, so random (and test-mode) weights are the same every time; None leaves seeding to the caller.
    """
    if weights not in ("pretrained", "random"):
        raise ValueError(f"Unknown --weights {weights!r}; choose 'pretrained' or 'random'.")
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"Unknown --weights-format {weights_format!r}; choose one of {', '.join(WEIGHTS_FORMATS)}.")
    cfg = gpt_model.get_model_config(model_size)  # a typo in the size fails in test mode too
    if seed is not None:
        torch.manual_seed(seed)
    if is_test_mode(test_mode):
        # A tiny random GPT: seconds on a CPU and no downloads; the numbers it gives mean nothing.
        cfg = dict(gpt_model.TINY_CONFIG)
        return gpt_model.GPTModel(cfg), cfg
    params = None
    if weights == "pretrained":
        # Download (or find) the weights before building the model: a failed download then costs nothing.
        if weights_format == "openai" and (tf_error := gpt_download.tensorflow_import_error()):
            print(f"TensorFlow does not import ({tf_error}), so OpenAI's checkpoint cannot be read; "
                  "using the same weights from Hugging Face's model.safetensors instead.")
            weights_format = "safetensors"
        load = (gpt_download.download_and_load_gpt2 if weights_format == "openai"
                else gpt_download.download_and_load_gpt2_safetensors)
        _settings, params = load(gpt_model.model_size_to_download_name(model_size), models_dir)
    model = gpt_model.GPTModel(cfg)
    if params is not None:
        gpt_model.load_weights_into_gpt(model, params)
    model.eval()
    return model, cfg
