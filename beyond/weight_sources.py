"""GPT-2 weights from sources other than OpenAI's TF checkpoint, none needing TensorFlow.

Hugging Face's `model.safetensors` becomes the chapter's `(settings, params)`; the book's own PyTorch files
(`gpt2-small-124M.pth` or `.safetensors`) become a `GPTModel` state_dict. Downloads go through the chapter's
`download_file` (resumable, checked, never half-written).
"""

import json
import re
from pathlib import Path

import numpy as np

import gpt_model
from gpt_download import CheckpointError, download_file, first_line

HF_SAFETENSORS_URL = "https://huggingface.co/openai-community/{repo}/resolve/main/model.safetensors"
HF_REPOS = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
# The book's own PyTorch state dicts (the chapter's parameter names), one file per size, each also as .safetensors
PYTORCH_WEIGHTS_URL = "https://huggingface.co/rasbt/gpt2-from-scratch-pytorch/resolve/main/{file}"
PYTORCH_FILES = {"124M": "gpt2-small-124M", "355M": "gpt2-medium-355M", "774M": "gpt2-large-774M",
                 "1558M": "gpt2-xl-1558M"}
# n_embd -> n_head for the four released sizes (safetensors files carry no hparams.json)
N_HEAD_BY_EMB = {768: 12, 1024: 16, 1280: 20, 1600: 25}


def tensorflow_import_error():
    """None when TensorFlow imports (the OpenAI checkpoint needs it), else one line saying what went wrong."""
    try:
        import tensorflow  # noqa: F401 -- slow, but the TF loader imports it right after anyway
    except Exception as err:  # noqa: BLE001 -- not only ImportError: a broken install fails in many ways
        return f"{type(err).__name__}: {first_line(err, 'no details')}"
    return None


# --------------------------------------------------------------------------------------------- Hugging Face safetensors

def download_and_load_gpt2_safetensors(model_size, models_dir, url=None):
    """Download Hugging Face's model.safetensors into models_dir/<size>/ and load it; returns (settings, params)."""
    size = gpt_model.model_size_to_download_name(model_size)
    url = url or HF_SAFETENSORS_URL.format(repo=HF_REPOS[size])
    path = download_file(url, Path(models_dir) / size / "model.safetensors")
    return load_gpt2_params_from_safetensors(path)


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


def _safetensors_to_params(tensors, path, n_head=None):
    """Map Hugging Face gpt2 names (optionally prefixed 'transformer.') to (settings, params)."""
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    if "wte.weight" not in tensors or "wpe.weight" not in tensors:
        raise CheckpointError(f"{path} is not a GPT-2 safetensors file (no wte.weight/wpe.weight): download "
                              f"model.safetensors from huggingface.co/openai-community/gpt2 (or -medium/-large/-xl).")

    def get(name):
        if name not in tensors:
            raise CheckpointError(f"{path} lacks the tensor {name}: delete it and download it again.")
        return np.ascontiguousarray(tensors[name], dtype=np.float32)

    layer_ids = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"h\.(\d+)\.", k))})
    n_vocab, n_embd = tensors["wte.weight"].shape
    n_head = n_head or _n_head_beside(path) or N_HEAD_BY_EMB.get(n_embd)
    if n_head is None:
        raise CheckpointError(f"{path} has n_embd={n_embd}, not a released GPT-2 size: pass n_head=... "
                              f"(or put its config.json beside it).")
    if layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"{path} has transformer blocks {layer_ids}, not 0..{len(layer_ids) - 1}: "
                              f"download it again.")
    settings = {"n_vocab": int(n_vocab), "n_ctx": int(tensors["wpe.weight"].shape[0]), "n_embd": int(n_embd),
                "n_head": int(n_head), "n_layer": len(layer_ids)}
    params = {"wte": get("wte.weight"), "wpe": get("wpe.weight"), "g": get("ln_f.weight"), "b": get("ln_f.bias"),
              "blocks": []}
    for i in layer_ids:
        params["blocks"].append({
            "attn": {"c_attn": {"w": get(f"h.{i}.attn.c_attn.weight"), "b": get(f"h.{i}.attn.c_attn.bias")},
                     "c_proj": {"w": get(f"h.{i}.attn.c_proj.weight"), "b": get(f"h.{i}.attn.c_proj.bias")}},
            "mlp": {"c_fc": {"w": get(f"h.{i}.mlp.c_fc.weight"), "b": get(f"h.{i}.mlp.c_fc.bias")},
                    "c_proj": {"w": get(f"h.{i}.mlp.c_proj.weight"), "b": get(f"h.{i}.mlp.c_proj.bias")}},
            "ln_1": {"g": get(f"h.{i}.ln_1.weight"), "b": get(f"h.{i}.ln_1.bias")},
            "ln_2": {"g": get(f"h.{i}.ln_2.weight"), "b": get(f"h.{i}.ln_2.bias")},
        })
    return settings, params


def _n_head_beside(path):
    """n_head from the config.json next to a safetensors file (Hugging Face keeps it there), else None."""
    config = Path(path).with_name("config.json")
    return json.loads(config.read_text(encoding="utf-8")).get("n_head") if config.is_file() else None


# --------------------------------------------------------------------------------------------- the book's PyTorch files

def download_and_load_gpt2_pytorch(model_size, models_dir, *, suffix=".pth", url=None):
    """Download the book's PyTorch GPT-2 (.pth or .safetensors) into models_dir/<size>/; returns its state_dict.

    No TensorFlow: the file holds the chapter's GPTModel parameters under their own names.
    """
    size = gpt_model.model_size_to_download_name(model_size)
    if suffix not in (".pth", ".safetensors"):
        raise ValueError(f"suffix must be '.pth' or '.safetensors', not {suffix!r}.")
    name = PYTORCH_FILES[size] + suffix
    path = download_file(url or PYTORCH_WEIGHTS_URL.format(file=name), Path(models_dir) / size / name, desc=name)
    return load_gpt2_state_dict(path)


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
