"""Classification fine-tuning of GPT-2: head swap and freezing, last-token loss, training loops, the CLI."""

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
import weakref

import torch
import torch.distributed as dist
import torch.nn.functional as F

import gpt_download
import gpt_model
import spam_dataset
from gpt_download import CheckpointError, atomic_write  # CheckpointError: load_classifier raises it too

# ---------------------------------------------------------------------------------------------------------
# Settings, devices, the model
# ---------------------------------------------------------------------------------------------------------

TRAINABLE_LAYERS = ("last_layer", "last_block", "last_two_blocks", "all")
TRAINABLE_TOKEN_POSITIONS = ("last", "first", "flexible")
CHECKPOINT_FORMAT = "gpt2-spam-classifier/1"


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


WEIGHTS_FORMATS = ("openai", "safetensors")


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


# ---------------------------------------------------------------------------------------------------------
# The classification head: swap and freeze
# ---------------------------------------------------------------------------------------------------------


def replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block", *, lora_rank=16, lora_alpha=16):
    """Swap the 50257-word output layer for a num_classes head and freeze what should not train; returns model."""
    if trainable_layers == "lora":
        # LoRA (a bonus experiment): the new head too is frozen; only the low-rank updates beside every Linear
        # (head included) train.
        model.out_head = torch.nn.Linear(in_features=model.tok_emb.weight.shape[1], out_features=num_classes)
        return apply_lora(model, lora_rank, lora_alpha)
    if trainable_layers not in TRAINABLE_LAYERS:
        raise ValueError(f"Unknown trainable_layers {trainable_layers!r}; choose one of {', '.join(TRAINABLE_LAYERS)}.")
    # The chapter's lesson: freeze everything, then unfreeze only the top of the network.
    for param in model.parameters():
        param.requires_grad = False
    emb_dim = model.tok_emb.weight.shape[1]
    # A fresh Linear layer has requires_grad=True, so the new head always trains.
    model.out_head = torch.nn.Linear(in_features=emb_dim, out_features=num_classes)
    if trainable_layers == "all":
        for param in model.parameters():
            param.requires_grad = True
    elif trainable_layers in ("last_block", "last_two_blocks"):
        blocks = model.trf_blocks[-1:] if trainable_layers == "last_block" else model.trf_blocks[-2:]
        for param in blocks.parameters():
            param.requires_grad = True
        for param in model.final_norm.parameters():
            param.requires_grad = True
    return model


# ---------------------------------------------------------------------------------------------------------
# Loss and accuracy on the token the classifier reads
# ---------------------------------------------------------------------------------------------------------


def select_token_logits(logits, input_batch, trainable_token_pos="last", pad_token_id=50256, average_embeddings=False):
    """Pick the one position per sequence the classifier reads: the last, the first, or the last real token."""
    if average_embeddings:
        # --average-embeddings (a bonus experiment): the mean over the real (non-padding) tokens, not one position.
        mask = (input_batch != pad_token_id).unsqueeze(-1).to(device=logits.device, dtype=logits.dtype)
        return (logits * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if trainable_token_pos == "last":
        return logits[:, -1, :]
    if trainable_token_pos == "first":
        return logits[:, 0, :]
    if trainable_token_pos == "flexible":
        # Right padding: the last real token sits just before the first pad token.
        last_real = ((input_batch != pad_token_id).sum(dim=1) - 1).clamp(min=0)
        return logits[torch.arange(logits.shape[0], device=logits.device), last_real.to(logits.device), :]
    raise ValueError(
        f"Unknown trainable_token_pos {trainable_token_pos!r}; choose one of {', '.join(TRAINABLE_TOKEN_POSITIONS)}."
    )


def calc_loss_batch(input_batch, target_batch, model, device, *, trainable_token_pos="last", pad_token_id=50256,
                    average_embeddings=False, ignore_index=-100):
    """Cross entropy of one batch, read from the last token's logits (the only one that saw the whole message)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = select_token_logits(model(input_batch), input_batch, trainable_token_pos, pad_token_id,
                                 average_embeddings)
    return torch.nn.functional.cross_entropy(logits, target_batch, ignore_index=ignore_index)


def calc_accuracy_loader(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                         pad_token_id=50256, average_embeddings=False):
    """Fraction of correct predictions over the first num_batches batches (all when None)."""
    model.eval()
    correct_predictions, num_examples = 0, 0
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        input_batch, target_batch = input_batch.to(device), target_batch.to(device)
        with torch.no_grad():
            logits = select_token_logits(model(input_batch), input_batch, trainable_token_pos, pad_token_id,
                                         average_embeddings)
        predicted_labels = torch.argmax(logits, dim=-1)
        num_examples += predicted_labels.shape[0]
        correct_predictions += (predicted_labels == target_batch).sum().item()
    # An empty loader has no accuracy; nan says so instead of a ZeroDivisionError.
    return correct_predictions / num_examples if num_examples else float("nan")


def calc_loss_loader(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                     pad_token_id=50256, average_embeddings=False, ignore_index=-100):
    """Mean batch loss over the first num_batches batches (all when None); nan for an empty loader."""
    def batch_loss(input_batch, target_batch):
        return calc_loss_batch(input_batch, target_batch, model, device,
                               trainable_token_pos=trainable_token_pos, pad_token_id=pad_token_id,
                               average_embeddings=average_embeddings, ignore_index=ignore_index).item()
    return _mean_batch_loss(data_loader, num_batches, batch_loss)


def _mean_batch_loss(data_loader, num_batches, batch_loss):
    """The mean of batch_loss(input_batch, target_batch) over the first num_batches batches; nan for none."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += batch_loss(input_batch, target_batch)
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter, *, trainable_token_pos="last",
                   pad_token_id=50256, average_embeddings=False, ignore_index=-100):
    """Return (train_loss, val_loss) on eval_iter batches each, in eval mode without gradients."""
    model.eval()
    options = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id,
               "average_embeddings": average_embeddings, "ignore_index": ignore_index}
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter, **options)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter, **options)
    model.train()
    return train_loss, val_loss


# ---------------------------------------------------------------------------------------------------------
# The chapter's training loop
# ---------------------------------------------------------------------------------------------------------


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                            *, trainable_token_pos="last", pad_token_id=50256, progress=None,
                            average_embeddings=False, ignore_index=-100, accumulation_steps=1):
    """The chapter's loop; returns (train_losses, val_losses, train_accs, val_accs, examples_seen).

    progress: optional tqdm bar (advanced one step per batch) or a callable given a dict after every step.
    accumulation_steps > 1 (a bonus experiment): gradients of that many batches add up before each optimizer step.
    """
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id,
             "average_embeddings": average_embeddings}
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for batch_idx, (input_batch, target_batch) in enumerate(train_loader):
            if batch_idx % accumulation_steps == 0:  # every batch by default, as in the chapter
                optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device, ignore_index=ignore_index, **token)
            (loss / accumulation_steps).backward()  # the mean over the accumulated batches
            if (batch_idx + 1) % accumulation_steps == 0 or batch_idx + 1 == len(train_loader):
                optimizer.step()
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter,
                                                      ignore_index=ignore_index, **token)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            _report_progress(progress, epoch=epoch + 1, step=global_step, loss=loss.item(),
                             examples_seen=examples_seen)
        # Accuracies on eval_iter batches only, as in the chapter: a cheap signal, not the final figure.
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter, **token)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter, **token)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def _report_progress(progress, **state):
    """Advance a tqdm-like bar, or call a plain callback with the step's numbers."""
    if progress is None:
        return
    if hasattr(progress, "update"):
        progress.update(1)
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(epoch=state["epoch"], loss=f"{state['loss']:.3f}", refresh=False)
    else:
        progress(state)


# ---------------------------------------------------------------------------------------------------------
# The fast trainer: the chapter's results, minutes sooner
# ---------------------------------------------------------------------------------------------------------


# The chapter's loop recomputes, every step and every evaluation, the frozen embeddings and blocks whose
# output for a message never changes. The fast trainer runs that frozen prefix once per distinct message,
# caches its output, and trains (and evaluates) only the trainable top on the cached activations. The last
# block is computed only at the one position the loss reads (its key and value weights fold into that query).
# Same loaders, same batches, same random numbers, same printed progress: only less arithmetic.

FAST_CACHE_MEMORY_BUDGET = 2 * 1024**3  # bytes; GPT-2 small, 120 tokens: about 0.55 GB for all 1494 SMS
FAST_PRECISIONS = ("fp32", "bf16")
_PREFIX_CACHES = weakref.WeakKeyDictionary()  # model -> its cache, so accuracies after training reuse it


def make_optimizer(model, lr=5e-5, weight_decay=0.1):
    """The chapter's AdamW, over the trainable parameters only and fused where PyTorch can: the same update, sooner."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # One kernel for all tensors instead of a loop over them (on CPU the step then costs about half).
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # no fused AdamW for this device or dtype, or an older PyTorch
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def fast_trainer_applies(model, trainable_token_pos="last"):
    """(True, "") when caching the frozen prefix gives the chapter's exact results, else (False, why not)."""
    if trainable_token_pos not in TRAINABLE_TOKEN_POSITIONS:
        raise ValueError(f"Unknown trainable_token_pos {trainable_token_pos!r}; "
                         f"choose one of {', '.join(TRAINABLE_TOKEN_POSITIONS)}.")
    reason = _not_standard_gpt(model)
    if reason:
        return False, reason
    if any(p.requires_grad for p in (*model.tok_emb.parameters(), *model.pos_emb.parameters())):
        return False, "the embeddings are trainable, so there is no frozen prefix to cache"
    # Dropout draws random numbers each step: cached activations could not reproduce them.
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            return False, f"dropout is on ({name}.p = {module.p}); set drop_rate to 0.0 as the chapter does"
    return True, ""


def _not_standard_gpt(model):
    """Why the shortcuts below do not hold for this model ("" when it is the package's causal GPTModel)."""
    if type(model).forward is not gpt_model.GPTModel.forward:
        return f"the model is a {type(model).__name__}, not the package's GPTModel"
    blocks = list(model.trf_blocks)
    if any(type(b).forward is not gpt_model.TransformerBlock.forward for b in blocks):
        return "a transformer block has a forward other than TransformerBlock's"
    # Causal attention is what lets a message's activations ignore whatever padding follows it.
    if any(not getattr(b.att, "causal", False) for b in blocks):
        return "an attention layer is not causal (att.causal is False)"
    return ""


def _num_frozen_blocks(model):
    """How many blocks from the bottom have no trainable parameter (the prefix the cache may hold)."""
    for i, block in enumerate(model.trf_blocks):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(model.trf_blocks)


def _prefix_cache(model, device, budget, precision="fp32"):
    """The model's cache of frozen-prefix activations; a fresh one when frozen weights or settings changed."""
    num_frozen = _num_frozen_blocks(model)
    frozen = [*model.tok_emb.parameters(), *model.pos_emb.parameters(),
              *model.trf_blocks[:num_frozen].parameters()]
    # A tensor's _version counts its in-place writes (load_state_dict, optimizer steps): a change means stale.
    signature = (num_frozen, str(device), precision, tuple((id(p), p._version, p.dtype) for p in frozen))
    cache = _PREFIX_CACHES.get(model)
    if cache is None or cache["signature"] != signature:
        cache = {"signature": signature, "num_frozen": num_frozen, "rows": {}, "bytes": 0, "full": False}
        _PREFIX_CACHES[model] = cache
    cache["budget"] = budget
    return cache


def _read_positions(input_batch, trainable_token_pos, pad_token_id):
    """The one position per row the classifier reads, as in select_token_logits (LongTensor [batch])."""
    b, t = input_batch.shape
    if trainable_token_pos == "last":
        return torch.full((b,), t - 1, dtype=torch.long)
    if trainable_token_pos == "first":
        return torch.zeros(b, dtype=torch.long)
    return ((input_batch != pad_token_id).sum(dim=1) - 1).clamp(min=0).long()


def _key(tokens):
    """Cache key of a message: its token ids up to the read position (causal attention looks no further)."""
    return tokens.to(torch.int64).cpu().numpy().tobytes()


def _fill_cache(model, cache, rows, device):
    """Run the frozen prefix on token-id rows (1-D, any lengths) in length-sorted chunks; cache what fits."""
    todo = {}
    for row in rows:
        if _key(row) not in cache["rows"]:
            todo[_key(row)] = row
    rows = sorted(todo.values(), key=len)
    emb_dim = model.tok_emb.weight.shape[1]
    start = 0
    while start < len(rows) and not cache["full"]:
        # up to 4096 tokens per chunk, counting the padding: big matrix products, little waste (sorted lengths)
        end = start + 1
        while end < len(rows) and (end + 1 - start) * len(rows[end]) <= 4096:
            end += 1
        chunk = rows[start:end]
        width = len(chunk[-1])
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = row
        with torch.no_grad():  # not inference_mode: autograd graphs of training steps will use these tensors
            x = _run_prefix(model, ids.to(device), cache["num_frozen"])
        for i, row in enumerate(chunk):
            size = len(row) * emb_dim * x.element_size()
            if cache["bytes"] + size > cache["budget"]:
                cache["full"] = True
                print(f"Fast trainer: the activation cache reached its memory budget "
                      f"({cache['budget'] / 2**30:.2f} GiB); messages beyond it are recomputed each time "
                      "(same results, less speed). Raise cache_memory_budget if memory allows.")
                break
            cache["rows"][_key(row)] = x[i, : len(row)].clone()
            cache["bytes"] += size
        start = end


def _warm_cache(model, cache, dataset, trainable_token_pos, pad_token_id, device):
    """Fill the cache from a dataset's examples in length-sorted chunks (less padding than random batches)."""
    try:
        rows = [torch.as_tensor(dataset[i][0]) for i in range(len(dataset))]
    except (TypeError, IndexError, KeyError):
        return  # not an indexable (ids, label) dataset: the cache fills batch by batch instead
    if not rows or any(r.dim() != 1 for r in rows):
        return
    if trainable_token_pos == "last" and len({len(r) for r in rows}) > 1:
        return  # rows padded per batch: the key ("every token up to the last") depends on the batch
    keys = []
    for row in rows:
        pos = int(_read_positions(row[None], trainable_token_pos, pad_token_id)[0])
        keys.append(row[: pos + 1])
    _fill_cache(model, cache, keys, device)


def _run_prefix(model, ids, num_blocks):
    """GPTModel.forward's embeddings and its bottom num_blocks blocks on ids [b, t] (dropout is off here)."""
    x = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1], device=ids.device))
    return model.trf_blocks[:num_blocks](x)


def _cached_prefix(model, cache, input_batch, pos, device):
    """Frozen-prefix activations for a batch: [b, max(pos)+1, emb_dim], each row valid up to its position."""
    rows = [input_batch[i, : int(p) + 1] for i, p in enumerate(pos)]
    keys = [_key(row) for row in rows]
    if any(k not in cache["rows"] for k in keys):
        _fill_cache(model, cache, rows, device)
    if any(k not in cache["rows"] for k in keys):  # the cache is full: compute this batch's prefix directly
        with torch.no_grad():
            return _run_prefix(model, input_batch[:, : int(pos.max()) + 1].to(device), cache["num_frozen"])
    if len({len(r) for r in rows}) == 1:
        return torch.stack([cache["rows"][k] for k in keys])
    out = torch.zeros(len(keys), len(max(rows, key=len)), model.tok_emb.weight.shape[1],
                      dtype=cache["rows"][keys[0]].dtype, device=device)
    for i, key in enumerate(keys):  # zeros after a row's position are never read (causal attention)
        out[i, : len(rows[i])] = cache["rows"][key]
    return out


def _last_block_at(block, x, pos):
    """A TransformerBlock's output at one position per row: the only position the classifier reads."""
    att, norm1 = block.att, block.norm1
    b, t, emb_dim = x.shape
    pos = pos.to(x.device)
    x_pos = x[torch.arange(b, device=x.device), pos]
    queries = att.W_query(norm1(x_pos)).view(b, att.num_heads, att.head_dim)
    # causal: the query at pos sees positions 0..pos (this also hides the zeros past shorter messages)
    visible = torch.arange(t, device=x.device)[None, :] <= pos[:, None]
    if isinstance(att.W_key, torch.nn.Linear) and isinstance(att.W_value, torch.nn.Linear):
        context = _folded_attention(att, norm1, x, queries, visible)
    else:  # wrapped projections (LoRA): keys and values of every position, then attention for one query
        h = norm1(x)
        keys, values = (z.view(b, t, att.num_heads, att.head_dim).transpose(1, 2)
                        for z in (att.W_key(h), att.W_value(h)))
        context = F.scaled_dot_product_attention(queries[:, :, None], keys, values,
                                                 attn_mask=visible[:, None, None])
    x_pos = x_pos + att.out_proj(context.reshape(b, emb_dim))
    return x_pos + block.ff(block.norm2(x_pos))


def _folded_attention(att, norm1, x, queries, visible):
    """One query's attention without projecting every position to keys and values ([b, heads, head_dim]).

    norm1(x) @ W.T = x_hat @ (W * scale).T + W @ shift, with x_hat the frozen normalized input. So the key
    weights fold into the query and the value weights apply after the weighted sum: per position this costs
    emb_dim * heads operations, not emb_dim**2. The keys' constant (W_key @ shift + bias) adds the same number
    to every score, which softmax ignores: its true gradient is 0, and here it is exactly 0.
    """
    heads, head_dim = att.num_heads, att.head_dim
    x_hat = F.layer_norm(x, x.shape[-1:], eps=norm1.eps)  # [b, t, emb]: fixed, as x is
    w_key = (att.W_key.weight * norm1.scale).view(heads, head_dim, -1)  # [heads, head_dim, emb]
    w_value = (att.W_value.weight * norm1.scale).view(heads, head_dim, -1)
    value_bias = att.W_value.weight @ norm1.shift
    if att.W_value.bias is not None:
        value_bias = value_bias + att.W_value.bias
    query_in_x = torch.einsum("bhd,hde->bhe", queries, w_key)
    scores = (query_in_x @ x_hat.transpose(1, 2)) / head_dim**0.5  # [b, heads, t], the scale SDPA uses
    weights = torch.softmax(scores.masked_fill(~visible[:, None, :], float("-inf")), dim=-1)
    mixed = weights @ x_hat  # [b, heads, emb]: the attention-weighted x_hat, before the value weights
    return torch.einsum("bhe,hde->bhd", mixed, w_value) + value_bias.view(heads, head_dim)


def _fast_logits(model, cache, input_batch, device, trainable_token_pos, pad_token_id):
    """The classifier's logits [batch, classes] at the read position: the cache, then the trainable top."""
    pos = _read_positions(input_batch, trainable_token_pos, pad_token_id)
    x = _cached_prefix(model, cache, input_batch, pos, device)
    num_frozen, blocks = cache["num_frozen"], model.trf_blocks
    if num_frozen == len(blocks):
        x_pos = x[torch.arange(x.shape[0], device=x.device), pos.to(x.device)]
    else:
        for block in blocks[num_frozen:-1]:  # trainable blocks below the last one need every position
            x = block(x)
        x_pos = _last_block_at(blocks[-1], x, pos)
    return model.out_head(model.final_norm(x_pos))


def _autocast(precision, device):
    """bfloat16 autocast when asked for (opt-in: faster where supported, not bit-comparable), else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _fast_loss_loader(model, cache, data_loader, device, num_batches, token):
    """calc_loss_loader from the cache: the same batches in the same order, without gradients."""
    def batch_loss(input_batch, target_batch):
        with torch.inference_mode():
            logits = _fast_logits(model, cache, input_batch, device, **token)
            return F.cross_entropy(logits.float(), target_batch.to(device)).item()
    return _mean_batch_loss(data_loader, num_batches, batch_loss)


def calc_accuracy_loader_fast(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                              pad_token_id=50256, precision="fp32",
                              cache_memory_budget=FAST_CACHE_MEMORY_BUDGET):
    """calc_accuracy_loader's result, reusing (and growing) the fast trainer's cache of frozen activations."""
    targets, predictions = predict_labels_fast(data_loader, model, device, num_batches,
                                               trainable_token_pos=trainable_token_pos, pad_token_id=pad_token_id,
                                               precision=precision, cache_memory_budget=cache_memory_budget)
    return _accuracy(targets, predictions)


def predict_labels_fast(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                        pad_token_id=50256, precision="fp32", cache_memory_budget=FAST_CACHE_MEMORY_BUDGET):
    """(targets, predicted labels) as CPU tensors, the full model's predictions read from the fast cache.

    For accuracies and confusion matrices after the fast trainer: its cache already holds the frozen blocks'
    activations, so only the trainable top runs. Where the cache would not be exact, the whole model runs.
    """
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id}
    ok, reason = fast_trainer_applies(model, trainable_token_pos)
    if not ok:
        print(f"Fast predictions not used: {reason}; running the whole model.")
        return _predict_labels(model, data_loader, device, num_batches, **token)
    cache = _prefix_cache(model, device, cache_memory_budget, precision)
    if num_batches is None:  # every example will be read: compute the new ones in length-sorted chunks
        with _autocast(precision, device):
            _warm_cache(model, cache, data_loader.dataset, trainable_token_pos, pad_token_id, device)
    return _fast_predictions(model, cache, data_loader, device, num_batches, token, precision)


def _accuracy(targets, predictions):
    """Fraction of predictions equal to the targets; nan for none (as calc_accuracy_loader)."""
    num_examples = len(targets)
    return (predictions == targets).sum().item() / num_examples if num_examples else float("nan")


def _fast_predictions(model, cache, data_loader, device, num_batches, token, precision):
    """(targets, predictions) from the cache: the same batches in the same order, under inference_mode."""
    model.eval()
    targets, predictions = [], []
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        with torch.inference_mode(), _autocast(precision, device):
            logits = _fast_logits(model, cache, input_batch, device, **token)
        predictions.append(torch.argmax(logits, dim=-1).cpu())
        targets.append(target_batch.cpu())
    if not targets:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(targets), torch.cat(predictions)


def _fast_accuracy(model, cache, data_loader, device, num_batches, token, precision):
    """calc_accuracy_loader from the cache: the same batches in the same order, under inference_mode."""
    return _accuracy(*_fast_predictions(model, cache, data_loader, device, num_batches, token, precision))


def train_classifier_fast(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
                          eval_iter, *, trainable_token_pos="last", pad_token_id=50256, precision="fp32",
                          cache_memory_budget=FAST_CACHE_MEMORY_BUDGET, progress=None):
    """train_classifier_simple's results and printout, sooner: the frozen prefix runs once per message.

    Falls back to train_classifier_simple (and says why) when the prefix is not frozen or dropout is on.
    precision="bf16" runs under bfloat16 autocast: faster on CPUs with bf16 units (AMX), not exact.
    """
    if precision not in FAST_PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(FAST_PRECISIONS)}.")
    ok, reason = fast_trainer_applies(model, trainable_token_pos)
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id}
    if not ok:
        print(f"Fast trainer not used: {reason}. Running the chapter's loop (train_classifier_simple) instead"
              + (" in fp32." if precision != "fp32" else "."))
        return train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                                       eval_freq, eval_iter, progress=progress, **token)
    cache = _prefix_cache(model, device, cache_memory_budget, precision)
    with _autocast(precision, device):  # bf16 also runs the frozen prefix in bf16: that is most of the work
        _warm_cache(model, cache, train_loader.dataset, trainable_token_pos, pad_token_id, device)

    # The chapter's loop line by line, iterating the same loaders the same way: same batches, same RNG draws.
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            with _autocast(precision, device):
                logits = _fast_logits(model, cache, input_batch, device, **token)
            loss = F.cross_entropy(logits.float(), target_batch.to(device))
            loss.backward()
            optimizer.step()
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with _autocast(precision, device):
                    train_loss = _fast_loss_loader(model, cache, train_loader, device, eval_iter, token)
                    val_loss = _fast_loss_loader(model, cache, val_loader, device, eval_iter, token)
                model.train()
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            _report_progress(progress, epoch=epoch + 1, step=global_step, loss=loss.item(),
                             examples_seen=examples_seen)
        train_accuracy = _fast_accuracy(model, cache, train_loader, device, eval_iter, token, precision)
        val_accuracy = _fast_accuracy(model, cache, val_loader, device, eval_iter, token, precision)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | "
              f"Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def classify_reviews_fast(texts, model, tokenizer, device, max_length=None, pad_token_id=50256, *,
                          trainable_token_pos="last", batch_size=32):
    """classify_review's answers for many messages: batched, last block only where the classifier reads."""
    reason = _not_standard_gpt(model)
    if reason:
        return [classify_review(text, model, tokenizer, device, max_length, pad_token_id,
                                trainable_token_pos=trainable_token_pos) for text in texts]
    model.eval()
    context_length = model.pos_emb.weight.shape[0]
    rows, lengths = [], []
    for text in texts:  # the same ids classify_review builds, padding included
        ids = _encode_for_classifier(text, tokenizer, context_length, max_length, pad_token_id)
        lengths.append(sum(1 for t in ids if t != pad_token_id))  # sort key: the real tokens (not the padding)
        rows.append(torch.tensor(ids or [pad_token_id], dtype=torch.long))  # empty text: read one pad token
    # sorted by length, a batch holds messages of about one size: little padding to compute
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    labels = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        pos = torch.tensor([len(rows[i]) - 1 for i in chunk])  # "last" without max_length: each its own last
        ids = torch.full((len(chunk), int(pos.max()) + 1), pad_token_id, dtype=torch.long)
        for k, i in enumerate(chunk):
            ids[k, : len(rows[i])] = rows[i]
        if trainable_token_pos != "last":
            pos = _read_positions(ids, trainable_token_pos, pad_token_id)
        with torch.inference_mode():
            ids = ids[:, : int(pos.max()) + 1].to(device)  # causal: nothing after the read position matters
            x = _last_block_at(model.trf_blocks[-1], _run_prefix(model, ids, len(model.trf_blocks) - 1), pos)
            predicted = torch.argmax(model.out_head(model.final_norm(x)), dim=-1)
        for i, label in zip(chunk, predicted.tolist()):
            labels[i] = "spam" if label == 1 else "not spam"
    return labels


# ---------------------------------------------------------------------------------------------------------
# Plots, classifying a message, saving and loading
# ---------------------------------------------------------------------------------------------------------


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss", save_path=None):
    """Plot training and validation curves against epochs (bottom axis) and examples seen (top); returns the Figure."""
    # pyplot (so Jupyter's inline display is set up), then closed: the returned figure shows once in a
    # notebook, and scripts and the CLI keep no open figures.
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(5, 3))
    plt.close(fig)
    ax1.plot(_as_list(epochs_seen), _as_list(train_values), label=f"Training {label}")
    ax1.plot(_as_list(epochs_seen), _as_list(val_values), linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend()
    # The invisible second plot only gives the top axis its examples-seen scale.
    ax2 = ax1.twiny()
    ax2.plot(_as_list(examples_seen), _as_list(train_values), alpha=0)
    ax2.set_xlabel("Examples seen")
    fig.tight_layout()
    if save_path is not None:
        _save_figure(fig, save_path)
    return fig


def _as_list(values):
    """Tensors, arrays and lists alike, as plain floats for matplotlib."""
    return [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def _save_figure(fig, path):
    """Write fig atomically, in the image format named by the file's extension (png when there is none)."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(str(path))[1].lstrip(".").lower() or "png")


def _encode_for_classifier(text, tokenizer, context_length, max_length=None, pad_token_id=50256):
    """A message's token ids as classify_review feeds them: cut to min(max_length, context_length), padded to it."""
    ids = spam_dataset._encode(tokenizer, text)  # exactly SpamDataset's encoding
    limit = context_length if max_length is None else min(max_length, context_length)
    ids = list(ids[:limit])
    if max_length is not None:
        ids += [pad_token_id] * (limit - len(ids))
    return ids


def classify_review(text, model, tokenizer, device, max_length=None, pad_token_id=50256, *,
                    trainable_token_pos="last"):
    """Return "spam" or "not spam" for one message, padded like the training data (the chapter's function)."""
    model.eval()
    supported_context_length = model.pos_emb.weight.shape[0]
    input_ids = _encode_for_classifier(text, tokenizer, supported_context_length, max_length, pad_token_id)
    input_tensor = torch.tensor(input_ids, device=device).unsqueeze(0)
    with torch.no_grad():
        logits = select_token_logits(model(input_tensor), input_tensor, trainable_token_pos, pad_token_id)
    predicted_label = torch.argmax(logits, dim=-1).item()
    return "spam" if predicted_label == 1 else "not spam"


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


# ---------------------------------------------------------------------------------------------------------
# Beyond the chapter: LoRA, metrics, prediction, several processes
# ---------------------------------------------------------------------------------------------------------

# --- LoRA: a small trainable low-rank update next to every frozen Linear (appendix E's idea) ---

class LoRALayer(torch.nn.Module):
    """The low-rank update x @ A @ B, scaled by alpha / rank; B starts at zero so training starts from the model."""

    def __init__(self, in_dim, out_dim, rank, alpha):
        super().__init__()
        self.A = torch.nn.Parameter(torch.empty(in_dim, rank))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the same init as an nn.Linear weight
        self.B = torch.nn.Parameter(torch.zeros(rank, out_dim))
        self.rank = rank
        self.alpha = alpha

    def forward(self, x):
        return (self.alpha / self.rank) * (x @ self.A @ self.B)


class LinearWithLoRA(torch.nn.Module):
    """A frozen nn.Linear plus its LoRA update; .linear keeps the original weights (state_dict "X.linear.weight")."""

    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

    # read like the nn.Linear it wraps, so code asking for out_features or bias keeps working
    in_features = property(lambda self: self.linear.in_features)
    out_features = property(lambda self: self.linear.out_features)
    weight = property(lambda self: self.linear.weight)
    bias = property(lambda self: self.linear.bias)

    def forward(self, x):
        return self.linear(x) + self.lora(x)


def replace_linear_with_lora(model, rank, alpha):
    """Swap every nn.Linear below `model` (out_head included) for a LinearWithLoRA, in place; returns the model."""
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        elif not isinstance(module, LinearWithLoRA):  # never wrap twice
            replace_linear_with_lora(module, rank, alpha)
    return model


def apply_lora(model, rank=16, alpha=16):
    """Freeze every weight, then add LoRA to every Linear: afterwards only the A and B matrices train."""
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}; pass e.g. --lora-rank 16.")
    for param in model.parameters():
        param.requires_grad = False
    replace_linear_with_lora(model, int(rank), float(alpha))
    for module in model.modules():
        if isinstance(module, LoRALayer):  # new ones train anyway; earlier ones were just frozen above
            module.requires_grad_(True)
    return model


def lora_settings(model):
    """{"lora_rank": r, "lora_alpha": a} when the model carries LoRA layers, else {} (for the checkpoint extras)."""
    for module in model.modules():
        if isinstance(module, LoRALayer):
            return {"lora_rank": module.rank, "lora_alpha": module.alpha}
    return {}


def count_trainable_parameters(model):
    """(trainable, total) parameter counts: what freezing or LoRA leaves to train."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# --- Metrics beyond accuracy ---

def classification_logits(model, input_batch, trainable_token_pos="last", pad_token_id=50256,
                          average_embeddings=False):
    """The [batch, classes] logits the classifier decides on: one token position, or the mean over real tokens."""
    return select_token_logits(model(input_batch), input_batch, trainable_token_pos, pad_token_id, average_embeddings)


def confusion_matrix_from_predictions(targets, predictions, num_classes=2):
    """matrix[true][predicted] counts as a list of lists (rows: true class, columns: predicted class)."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    index = torch.as_tensor(targets).long() * num_classes + torch.as_tensor(predictions).long()
    matrix.view(-1).add_(torch.bincount(index, minlength=num_classes * num_classes))
    return matrix.tolist()


def metrics_from_confusion_matrix(matrix, positive_class=1):
    """Accuracy, per-class precision/recall/F1 and (binary) the positive class's, from a confusion matrix."""
    num_classes = len(matrix)
    total = sum(sum(row) for row in matrix)
    correct = sum(matrix[i][i] for i in range(num_classes))
    per_class = []
    for c in range(num_classes):
        true_pos = matrix[c][c]
        predicted = sum(matrix[r][c] for r in range(num_classes))
        actual = sum(matrix[c])
        precision = true_pos / predicted if predicted else 0.0  # no prediction of c: 0 by convention
        recall = true_pos / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"precision": precision, "recall": recall, "f1": f1, "support": actual})
    result = {"accuracy": correct / total if total else 0.0, "num_examples": total,
              "confusion_matrix": [list(row) for row in matrix], "per_class": per_class,
              "macro_f1": sum(p["f1"] for p in per_class) / num_classes}
    if num_classes == 2:
        result.update({k: per_class[positive_class][k] for k in ("precision", "recall", "f1")})
        result["positive_class"] = positive_class
    return result


def classification_metrics(model, data_loader, device, num_classes=2, num_batches=None, positive_class=1, *,
                           trainable_token_pos="last", pad_token_id=50256, average_embeddings=False, fast=False,
                           precision="fp32"):
    """Accuracy, precision/recall/F1 (of the spam class when binary, per class always) and the confusion matrix.

    fast=True (after train_classifier_fast): the same predictions from its cache of frozen activations,
    computed with the given precision, instead of running the whole model again.
    """
    was_training = model.training
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id}
    if fast and not average_embeddings:
        targets, predictions = predict_labels_fast(data_loader, model, device, num_batches, precision=precision,
                                                   **token)
    else:
        targets, predictions = _predict_labels(model, data_loader, device, num_batches,
                                               average_embeddings=average_embeddings, **token)
    model.train(was_training)
    matrix = confusion_matrix_from_predictions(targets, predictions, num_classes)
    return metrics_from_confusion_matrix(matrix, positive_class)


def _predict_labels(model, data_loader, device, num_batches=None, *, trainable_token_pos="last",
                    pad_token_id=50256, average_embeddings=False):
    """(targets, predicted labels) as CPU tensors over the first num_batches batches, running the whole model."""
    model.eval()
    targets, predictions = [], []
    with torch.no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if num_batches is not None and i >= num_batches:
                break
            logits = classification_logits(model, input_batch.to(device), trainable_token_pos, pad_token_id,
                                           average_embeddings)
            predictions.append(logits.argmax(dim=-1).cpu())
            targets.append(target_batch.cpu())
    if not targets:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(targets), torch.cat(predictions)


def format_metrics_table(metrics_by_split, label_names=None):
    """A small plain-text table: one row per split (binary) or per split and class, then the confusion matrices."""
    lines = [f"{'split':<12}{'class':<12}{'accuracy':>9}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>6}"]
    for split, m in metrics_by_split.items():
        names = list(label_names) if label_names else [str(i) for i in range(len(m["per_class"]))]
        rows = ([m.get("positive_class", 1)] if len(m["per_class"]) == 2 else range(len(m["per_class"])))
        for c in rows:
            p = m["per_class"][c]
            lines.append(f"{split:<12}{names[c][:11]:<12}{m['accuracy'] * 100:>8.2f}%{p['precision'] * 100:>9.2f}%"
                         f"{p['recall'] * 100:>7.2f}%{p['f1'] * 100:>7.2f}%{p['support']:>6}")
    for split, m in metrics_by_split.items():
        names = list(label_names) if label_names else [str(i) for i in range(len(m["per_class"]))]
        width = max(8, *(len(n) + 1 for n in names))
        lines.append(f"\n{split} confusion matrix (rows: true, columns: predicted)")
        lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, m["confusion_matrix"]):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def plot_confusion_matrix(matrix, label_names, save_path=None, title="Confusion matrix"):
    """A heat map of matrix[true][predicted] with the counts written in; returns the Figure (saved when asked)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(label_names) + 2, 1.2 * len(label_names) + 1.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(label_names)), labels=label_names)
    ax.set_yticks(range(len(label_names)), labels=label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = max(max(row) for row in matrix) if matrix else 0
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > high / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    if save_path is not None:
        _save_figure(fig, save_path)
    return fig


# --- Using a trained classifier ---

def predict(texts, model, tokenizer, device, max_length=None, label_names=("ham", "spam"), pad_token_id=50256,
            *, trainable_token_pos="last", average_embeddings=False, batch_size=32):
    """(label, probability of that label) for each message, scored as classify_review scores one."""
    if isinstance(texts, str):
        texts = [texts]
    model.eval()
    context_length = _model_context_length(model)
    if max_length is not None:
        max_length = min(int(max_length), context_length)
    encoded = []
    for text in texts:
        ids = _encode_for_classifier(text, tokenizer, context_length, max_length, pad_token_id)
        encoded.append(ids or [pad_token_id])  # an empty message still needs one token
    results = []
    with torch.no_grad():
        # with max_length every message is padded to the same length (as in training), so batches are exact;
        # without it each message goes alone, unpadded
        step = batch_size if max_length is not None else 1
        for start in range(0, len(encoded), step):
            batch = torch.tensor(encoded[start:start + step], device=device)  # padded alike: one width
            logits = classification_logits(model, batch, trainable_token_pos, pad_token_id, average_embeddings)
            probabilities = torch.softmax(logits.float(), dim=-1)
            best = probabilities.argmax(dim=-1)
            for label_id, prob in zip(best.tolist(), probabilities.max(dim=-1).values.tolist()):
                name = label_names[label_id] if label_names and label_id < len(label_names) else str(label_id)
                results.append((name, prob))
    return results


def _model_context_length(model):
    """The longest input the model's position embedding supports."""
    model = unwrap_model(model)
    return model.pos_emb.weight.shape[0] if hasattr(model, "pos_emb") else 1024


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


def predict_from_checkpoint(checkpoint, texts, device="cpu", tokenizer=None, models_dir=None):
    """One call from a saved classifier (file or output folder) to (label, probability) for each message."""
    device = resolve_device(device) if isinstance(device, str) else device
    model, info = load_classifier(checkpoint, device=device)
    if tokenizer is None:
        tokenizer = gpt_download.get_gpt2_tokenizer(models_dir)
    extra = info.get("extra") or {}
    return predict(texts, model, tokenizer, device, max_length=info.get("max_length"),
                   label_names=info.get("label_names") or ("ham", "spam"),
                   pad_token_id=extra.get("pad_token_id", 50256),
                   trainable_token_pos=extra.get("trainable_token_pos", "last"),
                   average_embeddings=bool(extra.get("average_embeddings", False)))


# --- Several processes: torchrun + DistributedDataParallel ---

def distributed_environment():
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) for an ordinary run."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def setup_distributed(device="auto"):
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when WORLD_SIZE > 1; returns (rank, world, device).

    Processes other than rank 0 stop printing (their stdout goes to os.devnull); errors still show on stderr.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    rank, world_size, local_rank = distributed_environment()
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"Several processes run on CUDA or the CPU, not on {device.type}; pass --device cpu.")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- one progress printout (rank 0's), not N
    return rank, world_size, device


def rank0_first(stage):
    """Under torchrun, let rank 0 do a step first (downloads share file names): call "start" before, "end" after.

    Rank 0 waits at "end" and every other rank at "start", so they begin once rank 0 has finished; a plain run
    does nothing.
    """
    if dist.is_available() and dist.is_initialized() and (stage == "start") != (dist.get_rank() == 0):
        dist.barrier()


def cleanup_distributed():
    """Leave the process group (if any), so the program exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process():
    """True on rank 0 or in an ordinary run: the one process that prints and writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return distributed_environment()[0] == 0


def unwrap_model(model):
    """The plain GPTModel inside a DistributedDataParallel wrapper (for saving, attributes, predicting)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class ShardedSampler(torch.utils.data.Sampler):
    """This process's share of every global batch, drawn from the single-process order.

    Unlike DistributedSampler (its own shuffle), it iterates the loader's own sampler, so N processes with
    batch_size B/N see exactly the examples one process with batch B sees in each step (gradients equal).
    """

    def __init__(self, base_sampler, global_batch_size, rank, world_size):
        self.base_sampler = base_sampler
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size

    def __len__(self):
        return len(self.base_sampler) // self.global_batch_size * self.global_batch_size // self.world_size

    def __iter__(self):
        order = list(self.base_sampler)  # draws the shuffle seed from torch's RNG exactly as one process would
        # the last incomplete global batch is dropped so every process runs the same number of steps
        order = order[: len(order) // self.global_batch_size * self.global_batch_size]
        return iter(order[self.rank::self.world_size])


def distribute_training(model, train_loader, device):
    """Wrap the model in DDP and give this process its share of each global batch; returns (model, train_loader).

    train_loader's batch_size is the global batch: it must divide by the number of processes. A plain run
    (WORLD_SIZE 1) gets both back unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model, train_loader
    rank, world_size = dist.get_rank(), dist.get_world_size()
    batch_size = train_loader.batch_size
    if batch_size is None or batch_size % world_size:
        raise ValueError(f"The batch size ({batch_size}) must divide by the number of processes ({world_size}); "
                         "pass a --batch-size that is a multiple of --nproc_per_node.")
    loader = torch.utils.data.DataLoader(
        train_loader.dataset, batch_size=batch_size // world_size,
        sampler=ShardedSampler(train_loader.sampler, batch_size, rank, world_size),
        collate_fn=train_loader.collate_fn, num_workers=train_loader.num_workers, drop_last=False)
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids), loader


# --- Switches that change the model's structure (kept in the checkpoint, rebuilt when it is loaded) ---

def set_causal_mask(model, causal=True):
    """Switch every attention layer's causal mask on or off (off: each token sees the whole message)."""
    for module in unwrap_model(model).modules():
        if hasattr(module, "causal") and hasattr(module, "W_query"):
            module.causal = bool(causal)
    return model


def rebuild_classifier_switches(model, checkpoint):
    """Give a freshly built model the structure a checkpoint was trained with: LoRA layers, no causal mask."""
    extra = checkpoint.get("extra") or {}
    if checkpoint.get("trainable_layers") == "lora" and not lora_settings(model):
        apply_lora(model, extra.get("lora_rank", 16), extra.get("lora_alpha", 16))
    if extra.get("disable_causal_mask"):
        set_causal_mask(model, False)
    return model


# ---------------------------------------------------------------------------------------------------------
# Command line: `python train_classifier.py [flags]` trains; `python train_classifier.py predict ...` classifies
# ---------------------------------------------------------------------------------------------------------

OUTPUT_FILES = ("classifier.pt", "metrics.json", "loss.png", "accuracy.png")
PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|>, the chapter's padding token
# The errors a person fixes (bad flag values, missing or corrupt files, no network): one line, no traceback.
# DataError and CheckpointError are ValueErrors; DownloadError is a RuntimeError.
USER_ERRORS = (ValueError, OSError, gpt_download.DownloadError)


def _context_length_arg(value):
    """--context-length: longest_training_example, model_context_length or a number of tokens."""
    value = value.strip().replace("-", "_")
    if value in ("longest_training_example", "model_context_length"):
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not longest_training_example, model_context_length or a "
                                         "positive number of tokens")
    return number


def build_arg_parser():
    """Every flag of the training command, in groups: the chapter's run, the data, speed, the bonus experiments."""
    parser = argparse.ArgumentParser(
        prog="train_classifier.py",
        description="Fine-tune GPT-2 into a spam classifier (chapter 6). --test-mode: tiny model, offline, seconds. "
                    "`train_classifier.py predict --help`: classify messages with a trained classifier.",
    )
    chapter = parser.add_argument_group("the chapter's run")
    chapter.add_argument("--model-size", default="gpt2-small (124M)",
                         help='"gpt2-small (124M)" or 124M, "gpt2-medium (355M)" or 355M, 774M, 1558M')
    chapter.add_argument("--weights", choices=("pretrained", "random"), default="pretrained")
    chapter.add_argument("--weights-format", choices=WEIGHTS_FORMATS, default="openai",
                         help="openai: the chapter's TensorFlow checkpoint (safetensors when TensorFlow does not "
                              "import); safetensors: Hugging Face's copy of the same weights, no TensorFlow")
    chapter.add_argument("--models-dir", default="gpt2", help="where the GPT-2 checkpoint files are kept")
    chapter.add_argument("--num-epochs", type=int, default=5)
    chapter.add_argument("--batch-size", type=int, default=8)
    chapter.add_argument("--lr", type=float, default=5e-5)
    chapter.add_argument("--weight-decay", type=float, default=0.1)
    chapter.add_argument("--seed", type=int, default=123)
    chapter.add_argument("--eval-freq", type=int, default=50, help="evaluate every N training steps")
    chapter.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    chapter.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    chapter.add_argument("--output-dir", default="outputs", help="where classifier.pt, metrics.json and plots go")
    chapter.add_argument("--test-mode", action="store_true",
                         help="tiny random GPT, no downloads, seconds (same as TUTORIAL_TEST_MODE=1)")
    chapter.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None,
                      help="the UCI zip, the SMSSpamCollection TSV, a folder holding them, your CSV/TSV, or "
                           "'synthetic' (default: download into --data-dir; test mode: the shared zip, else "
                           "synthetic data)")
    data.add_argument("--data-dir", default="data", help="where the data and the train/validation/test CSVs go")
    data.add_argument("--text-column", default=None, help="text column of your own CSV")
    data.add_argument("--label-column", default=None, help="label column of your own CSV")
    data.add_argument("--encoding", default=None, help="encoding of your own CSV (e.g. latin-1)")
    data.add_argument("--balance", action=argparse.BooleanOptionalAction, default=True,
                      help="undersample the larger classes to the smallest one, as the chapter does (default: on)")

    speed = parser.add_argument_group("speed")
    speed.add_argument("--trainer", choices=("fast", "simple"), default="fast",
                       help="fast (default: the chapter's results sooner; the chapter's loop where it cannot give "
                            "them) or the chapter's loop, unchanged (simple)")
    speed.add_argument("--precision", choices=FAST_PRECISIONS, default="fp32",
                       help="bf16: the fast trainer under bfloat16 autocast, faster on CPUs with bf16 units but not "
                            "exact (the chapter's loop always runs in fp32)")

    bonus = parser.add_argument_group("experiments beyond the chapter (its bonus table)")
    bonus.add_argument("--trainable-layers", default="last_block", choices=(*TRAINABLE_LAYERS, "lora"),
                       help="what trains besides the new head (default: last_block, as in the chapter)")
    bonus.add_argument("--lora-rank", type=int, default=16, help="rank of the LoRA updates (--trainable-layers lora)")
    bonus.add_argument("--lora-alpha", type=float, default=16,
                       help="LoRA scaling: the update is multiplied by alpha / rank")
    bonus.add_argument("--trainable-token-pos", default="last", choices=TRAINABLE_TOKEN_POSITIONS,
                       help="which token's output classifies: last (chapter), first, or flexible (the last "
                            "non-padding one; each batch is then padded only to its longest message)")
    bonus.add_argument("--average-embeddings", action="store_true",
                       help="classify the mean of the outputs over the real (non-padding) tokens instead of one token")
    bonus.add_argument("--context-length", type=_context_length_arg, default="longest_training_example",
                       help="pad/truncate to longest_training_example (chapter), model_context_length, or N tokens")
    bonus.add_argument("--no-padding", action="store_true",
                       help="no padding at all: batch size 1 (combine with --accumulation-steps N)")
    bonus.add_argument("--accumulation-steps", type=int, default=1,
                       help="update the weights every N batches (gradient accumulation)")
    bonus.add_argument("--disable-causal-mask", action="store_true", help="let every token attend to the whole message")
    bonus.add_argument("--ignore-index", type=int, default=-100,
                       help="target value the cross entropy ignores (the bonus script's --ignore_index; -100: none)")
    return parser


def normalise_flag_spelling(argv):
    """Accept --num_epochs as --num-epochs (the chapter's bonus scripts use underscores); values are untouched."""
    out, passthrough = [], False
    for token in argv:
        if passthrough or not token.startswith("--") or token == "--":
            passthrough = passthrough or token == "--"
            out.append(token)
            continue
        name, eq, value = token.partition("=")
        out.append(name.replace("_", "-") + eq + value)
    return out


def _check_numbers(args):
    """Reject settings that would train nothing or crash later, naming the flag."""
    for flag, value in (("--num-epochs", args.num_epochs), ("--batch-size", args.batch_size),
                        ("--eval-freq", args.eval_freq), ("--eval-iter", args.eval_iter),
                        ("--accumulation-steps", args.accumulation_steps)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1 (got {value}).")
    if not args.lr > 0:
        raise ValueError(f"--lr must be a positive number (got {args.lr}).")
    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay must not be negative (got {args.weight_decay}).")


def _loader_options(args, cfg):
    """create_data_loaders' max_length and per_batch_padding for --context-length, --no-padding and "flexible"."""
    max_length = None
    if args.context_length == "model_context_length":
        max_length = int(cfg["context_length"])
    elif isinstance(args.context_length, int):
        if args.context_length > cfg["context_length"]:
            raise ValueError(f"--context-length {args.context_length} is longer than the model's context of "
                             f"{cfg['context_length']} tokens; pass at most {cfg['context_length']}.")
        max_length = args.context_length
    # "flexible" reads the last real token, and causal attention never lets a real token see the padding after
    # it: padding each batch only to its own longest message gives the same numbers for less work (not so
    # without the causal mask). A batch of one message (--no-padding) is padded to its own length: not at all.
    per_batch_padding = args.no_padding or (args.trainable_token_pos == "flexible" and not args.disable_causal_mask)
    return {"max_length": max_length, "per_batch_padding": per_batch_padding}


def _setup_classifier(model, args, num_classes):
    """The new head and what trains (--trainable-layers, LoRA included), then the causal-mask switch."""
    if args.trainable_layers == "lora":
        model = replace_head_and_freeze(model, num_classes, "lora", lora_rank=args.lora_rank,
                                        lora_alpha=args.lora_alpha)
        trainable, total = count_trainable_parameters(model)
        print(f"LoRA rank {args.lora_rank}, alpha {args.lora_alpha:g}: {trainable:,} of {total:,} parameters train.")
    else:
        model = replace_head_and_freeze(model, num_classes, args.trainable_layers)
    if args.disable_causal_mask:
        set_causal_mask(model, False)
    return model


def _why_not_fast(args, model):
    """"" when the fast trainer gives the chapter's results for these switches and this model, else why not."""
    # The fast trainer computes the chapter's loss and update only; these switches change one or the other.
    unsupported = [flag for flag, on in (
        ("--average-embeddings", args.average_embeddings),
        ("--accumulation-steps", args.accumulation_steps > 1),
        ("--ignore-index", 0 <= args.ignore_index < model.out_head.out_features),
        ("--trainable-layers lora", args.trainable_layers == "lora"),
        ("torchrun", distributed_environment()[1] > 1),
    ) if on]
    if unsupported:
        return f"the fast trainer does not implement {', '.join(unsupported)}"
    return fast_trainer_applies(model, args.trainable_token_pos)[1]


def _choose_trainer(args, model):
    """The one place deciding the loop: "fast" where it is exact for the switches, else "simple" (saying why)."""
    if args.trainer == "fast":
        reason = _why_not_fast(args, model)
        if not reason:
            return "fast"
        print(f"Using the chapter's loop: {reason}.")
    if args.precision != "fp32":
        print(f"Note: --precision {args.precision} applies to the fast trainer only; the chapter's loop runs in fp32.")
    return "simple"


def _json_safe(value):
    """metrics for strict JSON readers: nan/inf (e.g. the loss of an empty split) become null, tensors numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _json_safe(value.item())
    return value


def _write_outputs(output_dir, writers):
    """Call each write(tmp) on a temp file, then rename them all into place; returns the paths written.

    A temp file is renamed only when the with block ends without an error; any error (Ctrl-C too) deletes them
    all, so a run leaves all of its outputs or none (and earlier files stay as they were).
    """
    paths = [os.path.join(output_dir, name) for name in writers]
    with contextlib.ExitStack() as stack:
        for path, write in zip(paths, writers.values()):
            write(stack.enter_context(atomic_write(path)))
    return paths


def run_training(args):
    """The whole CLI run: data, model, training, accuracies, outputs; returns the metrics dict."""
    threads = torch.get_num_threads()
    if is_test_mode(args.test_mode):
        # The tiny model's matrices are too small to gain from threads, and on a busy machine idle-spinning
        # threads cost 10x more than they save.
        torch.set_num_threads(1)
    try:
        return _run_training(args)
    finally:
        torch.set_num_threads(threads)


def _run_training(args):
    """run_training's body (run_training only sets the thread count around it)."""
    start = time.time()
    _check_numbers(args)
    test_mode = is_test_mode(args.test_mode)
    _rank, world_size, device = setup_distributed(args.device)  # torchrun; a plain run: (0, 1, device)

    # Data first: a bad --data should fail before a 500 MB download.
    rank0_first("start")  # torchrun: rank 0 downloads and writes the splits first, the others then read them
    splits = spam_dataset.prepare_spam_splits(args.data, args.data_dir, offline=test_mode,
                                              text_column=args.text_column, label_column=args.label_column,
                                              encoding=args.encoding, balance=args.balance)
    label_names = list(splits["label_names"])  # prepare_spam_splits prints the source and the split sizes
    tokenizer = gpt_download.get_gpt2_tokenizer(args.models_dir)
    model, cfg = build_model(args.model_size, args.weights, args.models_dir, test_mode=test_mode,
                             weights_format=args.weights_format, seed=args.seed)
    rank0_first("end")
    model_desc = "tiny random GPT (test mode)" if test_mode else f"{args.model_size}, {args.weights} weights"
    print(f"Model: {model_desc} | device: {device}")

    if args.no_padding and args.batch_size != 1:
        print(f"--no-padding: batch size 1 instead of {args.batch_size} (use --accumulation-steps for larger "
              "updates).")
        args.batch_size = 1  # metrics.json records the batch size that ran
    loader_options = _loader_options(args, cfg)
    train_loader, val_loader, test_loader = spam_dataset.create_data_loaders(
        splits["train"], splits["validation"], splits["test"], tokenizer,
        batch_size=args.batch_size, seed=args.seed, **loader_options,
    )
    max_length = train_loader.dataset.max_length

    # The chapter seeds before the new head so its random init is reproducible.
    torch.manual_seed(args.seed)
    model = _setup_classifier(model, args, len(label_names))
    model.to(device)
    trainer = _choose_trainer(args, model)
    token = {"trainable_token_pos": args.trainable_token_pos, "pad_token_id": PAD_TOKEN_ID}

    torch.manual_seed(args.seed)
    if trainer == "fast":
        optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    else:  # the chapter's recipe, as printed
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    train_start = time.time()
    if trainer == "fast":
        history = train_classifier_fast(model, train_loader, val_loader, optimizer, device, args.num_epochs,
                                        args.eval_freq, args.eval_iter, precision=args.precision, **token)
    else:
        # torchrun: DDP and this process's share of every global batch; a plain run gets both back unchanged.
        train_model, process_train_loader = distribute_training(model, train_loader, device)
        history = train_classifier_simple(train_model, process_train_loader, val_loader, optimizer, device,
                                          args.num_epochs, args.eval_freq, args.eval_iter,
                                          average_embeddings=args.average_embeddings,
                                          ignore_index=args.ignore_index,
                                          accumulation_steps=args.accumulation_steps, **token)
    train_losses, val_losses, train_accs, val_accs, examples_seen = history
    examples_seen *= world_size
    training_seconds = time.time() - train_start
    print(f"Training completed in {training_seconds / 60:.2f} minutes.")

    # Accuracies on every batch. After the fast trainer its cache of the frozen blocks' activations gives the
    # same numbers without running those blocks again (the chapter's way costs, on GPT-2 small, about as long
    # as the whole fast training).
    if trainer == "fast":
        def accuracy(loader):
            return calc_accuracy_loader_fast(loader, model, device, precision=args.precision, **token)
    else:
        def accuracy(loader):
            return calc_accuracy_loader(loader, model, device, average_embeddings=args.average_embeddings,
                                        **token)
    train_accuracy, val_accuracy, test_accuracy = (accuracy(loader)
                                                   for loader in (train_loader, val_loader, test_loader))
    print(f"Training accuracy: {train_accuracy * 100:.2f}%")
    print(f"Validation accuracy: {val_accuracy * 100:.2f}%")
    print(f"Test accuracy: {test_accuracy * 100:.2f}%")

    # Precision, recall, F1 and the confusion matrix, beyond the chapter's accuracy (after the fast trainer, from
    # its cache too: the same predictions without running the frozen blocks again).
    classification = {split: classification_metrics(model, loader, device, len(label_names),
                                                    average_embeddings=args.average_embeddings,
                                                    fast=trainer == "fast", precision=args.precision, **token)
                      for split, loader in (("validation", val_loader), ("test", test_loader))}
    print(format_metrics_table(classification, label_names))

    settings = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    settings.update(device=str(device), test_mode=test_mode, trainer=trainer, data_source=splits["source"],
                    label_names=label_names, max_length=max_length,
                    per_batch_padding=loader_options["per_batch_padding"], config=dict(cfg))
    metrics = {
        "train_accuracy": train_accuracy, "val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
        "train_losses": list(train_losses), "val_losses": list(val_losses),
        "train_accs": list(train_accs), "val_accs": list(val_accs),
        "examples_seen": int(examples_seen), "training_seconds": training_seconds,
        "classification_metrics": classification,
    }
    if not is_main_process():  # under torchrun only rank 0 writes
        cleanup_distributed()
        return metrics

    def plot(values_a, values_b, label):
        # x positions as in the chapter: evaluations spread evenly over the epochs and the examples seen.
        n = len(values_a)
        epochs = torch.linspace(0, args.num_epochs, n)
        seen = torch.linspace(0, examples_seen, n)
        return lambda tmp: plot_values(epochs, seen, values_a, values_b, label=label).savefig(tmp, format="png")

    def plot_test_confusion_matrix(tmp):
        plot_confusion_matrix(classification["test"]["confusion_matrix"], label_names,
                              title="Test confusion matrix").savefig(tmp, format="png")

    def save(tmp):
        extra = {"trainable_token_pos": args.trainable_token_pos, "lora_rank": args.lora_rank,
                 "lora_alpha": args.lora_alpha, "average_embeddings": args.average_embeddings,
                 "disable_causal_mask": args.disable_causal_mask}
        save_classifier(tmp, model, cfg, label_names, max_length, extra,
                        model_size=None if test_mode else args.model_size, trainable_layers=args.trainable_layers)

    def write_metrics(tmp):
        metrics["total_seconds"] = time.time() - start
        metrics["settings"] = settings
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(_json_safe(metrics), f, indent=2, allow_nan=False)

    written = _write_outputs(args.output_dir, {
        "classifier.pt": save,
        "loss.png": plot(train_losses, val_losses, "loss"),
        "accuracy.png": plot(train_accs, val_accs, "accuracy"),
        "confusion_matrix.png": plot_test_confusion_matrix,
        "metrics.json": write_metrics,  # last: its total_seconds counts the other outputs too
    })
    print("Wrote " + ", ".join(written))
    cleanup_distributed()
    return metrics


def predict_main(argv=None):
    """`train_classifier.py predict --checkpoint DIR "message" ...`: prints label, probability, message."""
    parser = argparse.ArgumentParser(prog="train_classifier.py predict",
                                     description="Classify messages with a fine-tuned classifier.")
    parser.add_argument("messages", nargs="*", help="messages to classify (quote each one)")
    parser.add_argument("--checkpoint", required=True, help="a training run's output folder or its classifier.pt")
    parser.add_argument("--file", help="a text file with one message per line")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | mps (default: cpu)")
    args = parser.parse_args(argv)
    messages = list(args.messages)
    try:
        if args.file:
            if not os.path.isfile(args.file):
                raise FileNotFoundError(f"Message file {args.file} does not exist; pass a text file with one "
                                        "message per line.")
            with open(args.file, encoding="utf-8") as f:
                messages += [line.rstrip("\r\n") for line in f if line.strip()]
        if not messages:
            raise ValueError("No messages to classify; pass them in quotes after --checkpoint DIR, or --file FILE.")
        results = predict_from_checkpoint(args.checkpoint, messages, device=args.device)
    except USER_ERRORS as exc:
        _print_error(exc)
        return 1
    for message, (label, probability) in zip(messages, results):
        print(f"{label}\t{probability:.4f}\t{message}")
    return 0


def _print_error(exc):
    """A user error as one line on stderr: "error: <the message>"."""
    print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)


def _show_warning_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the CLI: "warning: <message>" on stderr."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None):
    """The CLI: returns the exit code (0 ok, 1 user error, 2 bad flags, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return predict_main(argv[1:])
    args = build_arg_parser().parse_args(normalise_flag_spelling(argv))
    try:
        with warnings.catch_warnings():
            if not args.debug:
                # Warnings for people (e.g. "12 texts were truncated") as one line each, without source lines.
                warnings.showwarning = _show_warning_line
            run_training(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("Interrupted: no output files were written.", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        _print_error(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
