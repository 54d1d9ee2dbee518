"""Saved classifiers: what training changed plus what identifies the base weights, or (full) every weight.

A small checkpoint (the default) holds the tensors that differ from the base GPT-2 (the new head, the trained
blocks, LoRA's matrices) and a record of the base: model size, weights format and the files' sha256, or for random
and test-mode weights the seed and config. Loading rebuilds the base the usual way and refuses a base whose
weights differ. A full checkpoint (`--full-checkpoint`) holds every weight, like a plain state_dict.
"""

import os
import re

import torch

import gpt_download
import gpt_model
from beyond import weight_sources
from beyond.experiments import classifier_switches, rebuild_classifier_switches
from beyond.model_setup import rebuild_base, tensor_sha256, weights_digest
from gpt_download import CheckpointError, atomic_write

CHECKPOINT_FORMAT = "gpt2-spam-classifier/2"
READABLE_FORMATS = ("gpt2-spam-classifier/1", CHECKPOINT_FORMAT)  # /1: always full, LoRA scaled by alpha / rank
# A plain state_dict saved by the chapter (torch.save(model.state_dict(), "review_classifier.pth")) holds no
# padding length or label names: the chapter's are used unless the caller says otherwise.
CHAPTER_MAX_LENGTH = 120
CHAPTER_LABELS = ("not spam", "spam")
__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "load_classifier", "resolve_checkpoint_path", "save_classifier"]


def _base_key(key):
    """The base model's name for a state_dict key: LoRA stores a wrapped Linear's weight as "X.linear.weight"."""
    return key.replace(".linear.", ".")


def save_classifier(path, model, cfg, label_names=("not spam", "spam"), max_length=None, extra=None, *,
                    model_size=None, trainable_layers="last_block", padded=True, base=None, full=False):
    """Write the classifier to path (a plain dict, loadable with weights_only=True); returns the path.

    Structure (LoRA, the causal mask) is read off the model. padded=False: it was trained without padding, so
    predictions must not pad. base (the record build_model_with_base returns): store only the tensors that differ
    from the base; without it, or with full=True, every weight is stored.
    """
    num_classes = model.out_head.out_features
    if len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names were given for a head with {num_classes} classes; "
                         "pass one name per class.")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # CPU: loads on any machine
    base_record = None
    if not full and base is not None:
        fingerprints = base["tensor_sha256"]
        kept = {k for k, v in state.items() if fingerprints.get(_base_key(k)) == tensor_sha256(v)}
        state = {k: v for k, v in state.items() if k not in kept}
        base_record = {k: v for k, v in base.items() if k != "tensor_sha256"}
        base_record["kept_sha256"] = weights_digest(fingerprints, {_base_key(k) for k in kept})
    switches = classifier_switches(model)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_state_dict": state,
        "base": base_record,  # None: model_state_dict holds every weight
        "config": dict(cfg),
        "num_classes": int(num_classes),
        "label_names": [str(name) for name in label_names],
        "max_length": None if max_length is None else int(max_length),
        "padded": bool(padded),
        "model_size": model_size,
        "trainable_layers": "lora" if switches["lora"] else trainable_layers,
        "switches": switches,
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


def _read(path):
    """The checkpoint dict of a file written by save_classifier (weights_only=True); one clear line otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here (RuntimeError, UnpicklingError, EOFError...)
        first = gpt_download.first_line(exc, type(exc).__name__)
        raise CheckpointError(f"{path} is truncated, corrupt or not a classifier saved by this package "
                              f"({first[:150]}); train again or copy the file again.") from exc
    if isinstance(checkpoint, dict) and checkpoint and "format" not in checkpoint and all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return _from_plain_state_dict(path, checkpoint)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a classifier saved by save_classifier (format {CHECKPOINT_FORMAT!r}); "
                              "pass a classifier.pt written by train_classifier.py.")
    return checkpoint


def _from_plain_state_dict(path, state):
    """A chapter classifier's plain state_dict as a checkpoint: the config read off the tensors' shapes."""
    try:
        vocab_size, emb_dim = state["tok_emb.weight"].shape
        context_length = state["pos_emb.weight"].shape[0]
        num_classes = state["out_head.weight"].shape[0]
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} is not a classifier saved by save_classifier and matches no GPT-2 shape: "
                              f"found {len(state)} tensors ({_few(state, 3)}) but "
                              "not tok_emb.weight, pos_emb.weight and out_head.weight; pass a classifier saved "
                              "with torch.save(model.state_dict(), ...) from the chapter's GPTModel.") from None
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"trf_blocks\.(\d+)\.", k))})
    # the shapes do not say the number of heads: GPT-2's sizes (and the tiny test model) fix it by the width
    heads = {**weight_sources.N_HEAD_BY_EMB, gpt_model.TINY_CONFIG["emb_dim"]: gpt_model.TINY_CONFIG["n_heads"]}
    if emb_dim not in heads or not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(f"{path} matches no GPT-2 shape: found embedding width {emb_dim}, {len(blocks)} "
                              f"transformer blocks and a {num_classes}-class head (GPT-2's widths are 768, 1024, "
                              "1280, 1600); pass a classifier fine-tuned from GPT-2.")
    cfg = {"vocab_size": int(vocab_size), "context_length": int(context_length), "emb_dim": int(emb_dim),
           "n_layers": len(blocks), "n_heads": heads[emb_dim], "drop_rate": 0.0,
           "qkv_bias": "trf_blocks.0.att.W_query.bias" in state}
    sizes = [name for name in gpt_model.model_configs
             if {k: gpt_model.get_model_config(name)[k] for k in ("emb_dim", "n_layers")} ==
             {"emb_dim": cfg["emb_dim"], "n_layers": cfg["n_layers"]}]
    names = CHAPTER_LABELS if num_classes == 2 else [str(i) for i in range(num_classes)]
    return {"format": "chapter state_dict", "model_state_dict": state, "base": None, "config": cfg,
            "num_classes": int(num_classes), "label_names": list(names), "max_length": CHAPTER_MAX_LENGTH,
            "padded": True, "model_size": sizes[0] if sizes else None, "trainable_layers": None,
            "switches": {"lora": {}, "causal": True}, "extra": {}}


def load_classifier(path, device="cpu", *, model=None, cfg=None, num_classes=None, model_size=None,
                    models_dir=None):
    """Return (model, info) from a save_classifier file (weights_only=True); a clear error when it does not fit.

    path may be the file or the folder holding classifier.pt, or a plain state_dict the chapter saved (labels
    "not spam"/"spam" and max_length 120 then, as in the chapter). Given model / cfg / num_classes / model_size, the
    file must match them; with model (holding the base weights), its weights are loaded into that model. A small
    checkpoint's pretrained base is found (or downloaded) in models_dir (default: where training found it).
    """
    path = resolve_checkpoint_path(path)
    checkpoint = _read(path)
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

    base = checkpoint.get("base")
    known = {}  # fingerprints of base tensors already computed (a caller's model may have changed since: none)
    if model is None:
        if base is None:
            model = gpt_model.GPTModel(saved_cfg)
        else:
            model, rebuilt = rebuild_base(base, models_dir)
            known = rebuilt["tensor_sha256"]
        model.out_head = torch.nn.Linear(saved_cfg["emb_dim"], saved_classes)
        # The bonus experiments' switches change the model's structure (LoRA, no causal mask): rebuild it first.
        rebuild_classifier_switches(model, checkpoint)
    _load_weights(path, model, checkpoint["model_state_dict"], base, known)
    model.to(device)
    model.eval()
    info = {k: v for k, v in checkpoint.items() if k != "model_state_dict"}
    return model, info


def _load_weights(path, model, state, base, known=None):
    """Load the saved tensors; a small checkpoint's other weights must be exactly the base it was trained on.

    known: tensor_sha256 fingerprints (by base name) of weights untouched since they were computed, so the base
    check need not hash those again.
    """
    result = model.load_state_dict(state, strict=False)
    kept = set(result.missing_keys)
    problems = []
    if result.unexpected_keys:
        problems.append(f"unexpected keys {_few(result.unexpected_keys)}")
    if base is None and kept:
        problems.append(f"missing keys {_few(kept)}")
    if problems:
        raise CheckpointError(f"{path} does not fit this model ({'; '.join(problems)}); load it with the settings "
                              "it was trained with.")
    if base is not None:
        weights = model.state_dict()
        known = known or {}
        fingerprints = {_base_key(k): known.get(_base_key(k)) or tensor_sha256(weights[k]) for k in kept}
        if weights_digest(fingerprints, fingerprints) != base["kept_sha256"]:
            source = (f"seed {base['seed']}" if base["kind"] == "random"
                      else f"{base['model_size']} {base['weights_format']} files")
            raise CheckpointError(f"{path} was trained on other base weights than this model's ({source}, compared "
                                  "by sha256); use the GPT-2 files it was trained with, or save it with "
                                  "--full-checkpoint.")


def _few(keys, n=4):
    """Up to n key names and how many more, for one-line messages."""
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


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
