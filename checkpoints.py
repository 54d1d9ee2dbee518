"""Saved classifiers: one file holding the fine-tuned weights and everything needed to rebuild the model."""

import os

import torch

import gpt_download
import gpt_model
from experiments import rebuild_classifier_switches
from gpt_download import CheckpointError, atomic_write

CHECKPOINT_FORMAT = "gpt2-spam-classifier/1"
__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "load_classifier", "resolve_checkpoint_path", "save_classifier"]


def save_classifier(path, model, cfg, label_names=("not spam", "spam"), max_length=None, extra=None, *,
                    model_size=None, trainable_layers="last_block"):
    """Write the fine-tuned weights plus everything needed to rebuild the model to path (a plain dict)."""
    num_classes = model.out_head.out_features
    if len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names were given for a head with {num_classes} classes; "
                         "pass one name per class.")
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        # CPU tensors so the file loads on any machine.
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(cfg),
        "num_classes": int(num_classes),
        "label_names": [str(name) for name in label_names],
        "max_length": None if max_length is None else int(max_length),
        "model_size": model_size,
        "trainable_layers": trainable_layers,
        "extra": dict(extra or {}),
    }
    with atomic_write(path) as tmp:
        torch.save(checkpoint, tmp)
    return os.fspath(path)


def _model_shape(model):
    """The config settings that can be read off a built model, for mismatch messages."""
    att = model.trf_blocks[0].att
    shape = {
        "vocab_size": model.tok_emb.weight.shape[0],
        "context_length": model.pos_emb.weight.shape[0],
        "emb_dim": model.tok_emb.weight.shape[1],
        "n_layers": len(model.trf_blocks),
        "qkv_bias": att.W_query.bias is not None,
    }
    heads = getattr(att, "num_heads", None)
    if heads is not None:
        shape["n_heads"] = int(heads)
    return shape


def _check_same(path, what, saved, expected):
    """Raise one sentence naming the setting that differs between the file and what the caller expects."""
    if expected is not None and saved is not None and saved != expected:
        raise CheckpointError(f"{path} was saved with {what}={saved!r} but this model uses {what}={expected!r}; "
                              f"build the model with {what}={saved!r} or load another classifier file.")


def _same_size(a, b):
    """True when two model-size spellings ("124M", "gpt2-small (124M)") name the same GPT-2."""
    try:
        return gpt_model.model_size_to_download_name(a) == gpt_model.model_size_to_download_name(b)
    except (ValueError, KeyError):
        return a == b


def load_classifier(path, device="cpu", *, model=None, cfg=None, num_classes=None, model_size=None):
    """Return (model, info) from a save_classifier file (weights_only=True); a clear error when it does not fit.

    path may be the file or the folder holding classifier.pt. Given model / cfg / num_classes / model_size, the
    file must match them; with model, its weights are loaded into that model.
    """
    path = resolve_checkpoint_path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here (RuntimeError, UnpicklingError, EOFError...)
        first = gpt_download.first_line(exc, type(exc).__name__)
        raise CheckpointError(f"{path} is truncated, corrupt or not a classifier saved by this package "
                              f"({first[:150]}); train again or copy the file again.") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a classifier saved by save_classifier (format {CHECKPOINT_FORMAT!r}); "
                              "pass a classifier.pt written by train_classifier.py.")
    saved_cfg, saved_classes = checkpoint["config"], checkpoint["num_classes"]
    saved_size = checkpoint.get("model_size")
    if model_size is not None and saved_size is not None and not _same_size(saved_size, model_size):
        _check_same(path, "model_size", saved_size, model_size)
    _check_same(path, "num_classes", saved_classes, num_classes)
    expected_cfg = dict(cfg or {})
    if model is not None:
        expected_cfg.update(_model_shape(model))
        _check_same(path, "num_classes", saved_classes, model.out_head.out_features)
    for key in sorted(expected_cfg):
        _check_same(path, key, saved_cfg.get(key), expected_cfg[key])

    if model is None:
        model = gpt_model.GPTModel(saved_cfg)
        model.out_head = torch.nn.Linear(saved_cfg["emb_dim"], saved_classes)
        # The bonus experiments' switches change the model's structure (LoRA, no causal mask): rebuild it first.
        rebuild_classifier_switches(model, checkpoint)
    try:
        model.load_state_dict(checkpoint["model_state_dict"])
    except RuntimeError as exc:
        first = gpt_download.first_line(exc, type(exc).__name__)
        raise CheckpointError(f"{path} does not fit this model ({first[:150]}); "
                              "load it with the settings it was trained with.") from exc
    model.to(device)
    model.eval()
    info = {k: v for k, v in checkpoint.items() if k != "model_state_dict"}
    return model, info


def resolve_checkpoint_path(checkpoint):
    """A classifier file, or a run's output folder holding classifier.pt; FileNotFoundError naming it otherwise."""
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        path = os.path.join(path, "classifier.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Classifier file {path} not found; pass the output folder of a training run "
                                "(it holds classifier.pt) or the .pt file itself, or train one with "
                                "`python train_classifier.py`.")
    return path
