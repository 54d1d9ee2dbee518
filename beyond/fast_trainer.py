"""The fast trainer: the chapter's results (same losses, accuracies and weights), in a fraction of the time.

The chapter's loop recomputes, every step and every evaluation, the frozen embeddings and blocks whose
output for a message never changes. The fast trainer runs that frozen prefix once per distinct message,
caches its output, and trains (and evaluates) only the trainable top on the cached activations. The last
block is computed only at the one position the loss reads (its key and value weights fold into that query).
Same loaders, same batches, same random numbers, same printed progress: only less arithmetic.

The cache (activation_cache.ActivationCache: held by the caller, or living for one call) takes a share of the
memory available and spills beyond it to a temporary file, so the speed holds at any data size; with
precision="bf16" it holds bf16 and the frozen blocks run on bf16 copies of their weights, cast once.
"""


import contextlib

import torch
import torch.nn.functional as F

import gpt_model
from beyond import bonus_training, metrics
from beyond.activation_cache import ActivationCache, message_key
from beyond.bonus_training import TRAINABLE_TOKEN_POSITIONS, read_positions, train_classifier_simple
from beyond.experiments import LinearWithLoRA

FAST_PRECISIONS = ("fp32", "bf16")
GROUP_BATCHES = 16  # evaluation batches the top reads in one pass (its weights read once for all of them)

def make_optimizer(model, lr=5e-5, weight_decay=0.1):
    """The chapter's AdamW, over the trainable parameters only and fused where PyTorch can: the same update, sooner."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # One kernel for all tensors instead of a loop over them (on CPU the step then costs about half).
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # no fused AdamW for this device or dtype, or an older PyTorch
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def why_not_fast(model, trainable_token_pos="last", *, average_embeddings=False, ignore_index=-100,
                 accumulation_steps=1, distributed=False):
    """"" when the fast trainer gives train_classifier_simple's exact results here, else the reason it does not.

    The one place that decides: the CLI, the trainer and the fast predictions all ask it.
    """
    if trainable_token_pos not in TRAINABLE_TOKEN_POSITIONS:
        raise ValueError(f"Unknown trainable_token_pos {trainable_token_pos!r}; "
                         f"choose one of {', '.join(TRAINABLE_TOKEN_POSITIONS)}.")
    # The fast trainer computes the chapter's loss and update only; these switches change one or the other.
    switches = [name for name, on in (
        ("average_embeddings", average_embeddings),
        ("accumulation_steps", accumulation_steps > 1),
        ("ignore_index", 0 <= ignore_index < model.out_head.out_features),
        ("several processes (torchrun)", distributed),
    ) if on]
    if switches:
        return f"the fast trainer does not implement {', '.join(switches)}"
    return why_not_standard_gpt(model) or _why_not_frozen(model)


def why_not_standard_gpt(model):
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


def _why_not_frozen(model):
    """Why there is no frozen prefix whose output can be cached ("" when there is one)."""
    if any(p.requires_grad for p in (*model.tok_emb.parameters(), *model.pos_emb.parameters())):
        return "the embeddings are trainable, so there is no frozen prefix to cache"
    if any(isinstance(m, LinearWithLoRA) for m in model.modules()):
        return "LoRA trains updates inside every block, so there is no frozen block to cache"
    # Dropout draws random numbers each step: cached activations could not reproduce them.
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            return f"dropout is on ({name}.p = {module.p}); set drop_rate to 0.0 as the chapter does"
    return ""


def _warm_cache(model, cache, datasets, trainable_token_pos, pad_token_id, device):
    """One pass of the frozen blocks over every message of the datasets, before the loop reads them."""
    rows = []
    for dataset in datasets:
        try:
            examples = [torch.as_tensor(dataset[i][0]) for i in range(len(dataset))]
        except (TypeError, IndexError, KeyError):
            continue  # not an indexable (ids, label) dataset: the cache fills batch by batch instead
        if any(r.dim() != 1 for r in examples):
            continue
        if trainable_token_pos == "last" and len({len(r) for r in examples}) > 1:
            continue  # rows padded per batch: the key ("every token up to the last") depends on the batch
        for row in examples:
            rows.append(row[: int(read_positions(row[None], trainable_token_pos, pad_token_id)[0]) + 1])
    cache.add(model, rows, device)


def _to_device(x, device):
    """A CPU tensor on the device; to a GPU through pinned memory without waiting (the next batch overlaps)."""
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _cached_prefix(model, cache, input_batch, pos, device):
    """Frozen-prefix activations for a batch: [b, max(pos)+1, emb_dim] in the cache's dtype, valid up to pos."""
    rows = [input_batch[i, : int(p) + 1] for i, p in enumerate(pos)]
    keys = [message_key(row) for row in rows]
    if not cache.full and any(k not in cache.rows for k in keys):
        cache.add(model, rows, device, progress=False)
    cached = [cache.get(k) for k in keys]
    if any(x is None for x in cached):  # beyond memory and disk: compute this batch's prefix directly
        x = cache.prefix(model, input_batch[:, : int(pos.max()) + 1].to(device))
        return x.to(cache.dtype)  # rounded as a cached row would be: the same numbers either way
    # one contiguous tensor in one call; zeros after a row's position are never read (causal attention)
    out = torch.nn.utils.rnn.pad_sequence(cached, batch_first=True)
    return _to_device(out, device)


def last_block_at(block, x, pos):
    """A TransformerBlock's output at one position per row: the only position the classifier reads.

    Also the batched predictions' shortcut (prediction.class_probabilities): same numbers up to float rounding.
    """
    att, norm1 = block.att, block.norm1
    b, t, emb_dim = x.shape
    pos = pos.to(x.device)
    x_pos = x[torch.arange(b, device=x.device), pos].float()  # the residual stream in fp32, as the weights
    queries = att.W_query(norm1(x_pos)).view(b, att.num_heads, att.head_dim)
    # causal: the query at pos sees positions 0..pos (this also hides the zeros past shorter messages)
    visible = torch.arange(t, device=x.device)[None, :] <= pos[:, None]
    if isinstance(att.W_key, torch.nn.Linear) and isinstance(att.W_value, torch.nn.Linear):
        context = _folded_attention(att, norm1, x, queries, visible)
    else:  # wrapped projections (LoRA): keys and values of every position, then attention for one query
        h = norm1(x.float())
        keys, values = (z.view(b, t, att.num_heads, att.head_dim).transpose(1, 2)
                        for z in (att.W_key(h), att.W_value(h)))
        context = F.scaled_dot_product_attention(queries[:, :, None], keys, values,
                                                 attn_mask=visible[:, None, None])
    x_pos = x_pos + att.out_proj(context.reshape(b, emb_dim))
    return x_pos + block.ff(block.norm2(x_pos))


def _folded_attention(att, norm1, x, queries, visible):
    """One query's attention without projecting every position to keys and values ([b, heads, head_dim]).

    norm1(x) @ W.T = (x_hat * scale) @ W.T + W @ shift, with x_hat the frozen normalized input. So the key
    weights fold into the query and the value weights apply after the weighted sum (whose weights add up to 1,
    so the shift passes through it): per position this costs emb_dim * heads operations, not emb_dim**2, and
    the LayerNorm's scale multiplies [b, heads, emb_dim] vectors, never the weight matrices. The keys' constant
    (W_key @ shift + bias) adds the same number to every score, which softmax ignores: its true gradient is 0,
    and here it is exactly 0.
    """
    heads, head_dim = att.num_heads, att.head_dim
    x_hat = F.layer_norm(x, x.shape[-1:], eps=norm1.eps)  # [b, t, emb]: fixed, as x is (bf16 from a bf16 cache)
    query_in_x = torch.einsum("bhd,hde->bhe", queries, att.W_key.weight.view(heads, head_dim, -1)) * norm1.scale
    # the products over every position in x's precision (bf16: the matrix units), softmax and the rest in fp32
    scores = (query_in_x.to(x_hat.dtype) @ x_hat.transpose(1, 2)).float() / head_dim**0.5  # the scale SDPA uses
    weights = torch.softmax(scores.masked_fill(~visible[:, None, :], float("-inf")), dim=-1)
    mixed = (weights.to(x_hat.dtype) @ x_hat).float() * norm1.scale + norm1.shift  # norm1 of the weighted mean
    context = torch.einsum("bhe,hde->bhd", mixed, att.W_value.weight.view(heads, head_dim, -1))
    return context if att.W_value.bias is None else context + att.W_value.bias.view(heads, head_dim)


def _fast_logits(model, cache, input_batch, device, trainable_token_pos, pad_token_id):
    """The classifier's logits [batch, classes] at the read position: the cache, then the trainable top."""
    pos = read_positions(input_batch, trainable_token_pos, pad_token_id)
    return _top_logits(model, cache, _cached_prefix(model, cache, input_batch, pos, device), pos)


def _top_logits(model, cache, x, pos):
    """The trainable top on frozen-prefix activations x [b, t, emb_dim], read at pos: logits [b, classes]."""
    num_frozen, blocks = cache.num_frozen, model.trf_blocks
    if torch.is_grad_enabled() or num_frozen < len(blocks) - 1:
        # a training step (8 rows: its casts would cost what bf16 products save) and trainable blocks below
        # the last one run in fp32; evaluations (many rows at once) keep a bf16 cache's products in bf16
        x = x.float()
    if num_frozen == len(blocks):
        x_pos = x[torch.arange(x.shape[0], device=x.device), pos.to(x.device)].float()
    else:
        for block in blocks[num_frozen:-1]:
            x = block(x)
        x_pos = last_block_at(blocks[-1], x, pos)
    return model.out_head(model.final_norm(x_pos))


def _grouped_logits(model, cache, batches, device, token):
    """Each batch's logits, from one pass of the top over all of them (no gradients needed).

    With batches of 8, the top's time goes to reading its 7 M weights, not to arithmetic: one pass over ten
    evaluation batches reads them once instead of ten times. Rows are independent, so each batch's logits are
    its own pass's, up to float rounding.
    """
    parts = []
    for input_batch in batches:
        pos = read_positions(input_batch, token["trainable_token_pos"], token["pad_token_id"])
        parts.append((_cached_prefix(model, cache, input_batch, pos, device), pos))
    width = max(x.shape[1] for x, _ in parts)
    x = torch.cat([F.pad(x, (0, 0, 0, width - x.shape[1])) for x, _ in parts])  # zeros past a row: unread
    return _top_logits(model, cache, x, torch.cat([pos for _, pos in parts])).split([len(p) for _, p in parts])


def _batch_groups(data_loader, num_batches):
    """The loader's first num_batches batches in lists of up to GROUP_BATCHES, iterated as the chapter iterates."""
    group = []
    for i, batch in enumerate(data_loader):
        if i >= num_batches:
            break
        group.append(batch)
        if len(group) == GROUP_BATCHES:
            yield group
            group = []
    if group:
        yield group


def _fast_loss_loader(model, cache, data_loader, device, num_batches, token):
    """calc_loss_loader from the cache: the same batches in the same order, without gradients."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    with torch.inference_mode():
        for group in _batch_groups(data_loader, num_batches):
            for logits, (_, target_batch) in zip(_grouped_logits(model, cache, [b[0] for b in group], device, token),
                                                 group):
                total_loss += F.cross_entropy(logits.float(), target_batch.to(device)).item()
    return total_loss / num_batches


def calc_accuracy_loader_fast(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                              pad_token_id=50256, precision="fp32", cache=None):
    """calc_accuracy_loader's result, reusing (and growing) the cache of frozen activations given, if any."""
    targets, predictions = predict_labels_fast(data_loader, model, device, num_batches,
                                               trainable_token_pos=trainable_token_pos, pad_token_id=pad_token_id,
                                               precision=precision, cache=cache)
    return _accuracy(targets, predictions)


def calc_loss_loader_fast(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                          pad_token_id=50256, precision="fp32", cache=None):
    """calc_loss_loader's result (to float rounding), reusing (and growing) the cache of frozen activations given."""
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id}
    reason = why_not_fast(model, trainable_token_pos)
    if reason:
        print(f"Fast loss not used: {reason}; running the whole model.")
        with torch.no_grad():
            return bonus_training.calc_loss_loader(data_loader, model, device, num_batches, **token)
    with _held_or_own(cache) as held:
        held.bind(model, device, precision)
        return _fast_loss_loader(model, held, data_loader, device, num_batches, token)


def predict_labels_fast(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                        pad_token_id=50256, precision="fp32", cache=None):
    """(targets, predicted labels) as CPU tensors, the full model's predictions read from the fast cache.

    For accuracies and confusion matrices after the fast trainer: pass the ActivationCache it filled (cache=)
    and only the trainable top runs. Without one, a cache lives for this call. Where the cache would not be
    exact, the whole model runs.
    """
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id}
    reason = why_not_fast(model, trainable_token_pos)
    if reason:
        print(f"Fast predictions not used: {reason}; running the whole model.")
        return metrics.predict_labels(model, data_loader, device, num_batches, **token)
    with _held_or_own(cache) as held:
        held.bind(model, device, precision)
        if num_batches is None:  # every example will be read: compute the new ones in length-sorted chunks
            _warm_cache(model, held, [data_loader.dataset], trainable_token_pos, pad_token_id, device)
        return _fast_predictions(model, held, data_loader, device, num_batches, token)


def _held_or_own(cache, memory=None, cache_dir=None):
    """A context giving the caller's cache untouched, or a new one that is closed when the context ends."""
    return contextlib.nullcontext(cache) if cache is not None else ActivationCache(memory, cache_dir)


def _accuracy(targets, predictions):
    """Fraction of predictions equal to the targets; nan for none (as calc_accuracy_loader)."""
    num_examples = len(targets)
    return (predictions == targets).sum().item() / num_examples if num_examples else float("nan")


def _fast_predictions(model, cache, data_loader, device, num_batches, token):
    """(targets, predictions) from the cache: the same batches in the same order, under inference_mode."""
    model.eval()
    targets, predictions = [], []
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for group in _batch_groups(data_loader, num_batches):
        with torch.inference_mode():
            logits = _grouped_logits(model, cache, [b[0] for b in group], device, token)
        predictions += [torch.argmax(x, dim=-1).cpu() for x in logits]
        targets += [target_batch.cpu() for _, target_batch in group]
    if not targets:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(targets), torch.cat(predictions)


def train_classifier_fast(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
                          eval_iter, *, trainable_token_pos="last", pad_token_id=50256, precision="fp32",
                          cache_memory=None, cache_dir=None, cache=None, controls=None):
    """train_classifier_simple's results and printout, sooner: the frozen prefix runs once per message.

    Falls back to train_classifier_simple (and says why) when the prefix is not frozen or dropout is on.
    precision="bf16": the frozen blocks in bf16 (weights cast once) and the cache in bf16; the trainable top's
    weights stay fp32 (at a batch of 8 its products cost less than casting its weights each step), only its
    products over every cached position read the bf16 cache in bf16: faster on CPUs with bf16 units, not exact. cache: an ActivationCache the caller holds, so that predict_labels_fast can
    reuse it afterwards; without one, a cache lives for this call, holding cache_memory bytes (or "8GB";
    default a share of the memory available) and beyond it a file in cache_dir. controls: a TrainingControls
    (schedule, clipping, early stopping), called where train_classifier_simple calls it; None: the chapter's run.
    """
    if precision not in FAST_PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(FAST_PRECISIONS)}.")
    token = {"trainable_token_pos": trainable_token_pos, "pad_token_id": pad_token_id}
    reason = why_not_fast(model, trainable_token_pos)
    if reason:
        print(f"Fast trainer not used: {reason}. Running the chapter's loop (train_classifier_simple) instead"
              + (" in fp32." if precision != "fp32" else "."))
        return train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                                       eval_freq, eval_iter, controls=controls, **token)
    with _held_or_own(cache, cache_memory, cache_dir) as held:
        held.bind(model, device, precision)
        try:
            # one pass of the frozen blocks over everything the loop will read, in length-sorted chunks
            _warm_cache(model, held, [train_loader.dataset, val_loader.dataset], device=device, **token)
            return _fast_loop(model, held, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
                              eval_iter, token, controls)
        except BaseException:  # an error or Ctrl-C: free the memory and the file now, even the caller's cache
            held.close()
            raise


def _fast_loop(model, cache, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
               token, controls=None):
    """The chapter's loop line by line, iterating the same loaders the same way: same batches, same RNG draws."""
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step, stop = 0, -1, False
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            if controls is not None:  # one optimizer step per batch here: the step is global_step + 1
                controls.start_step(optimizer, global_step + 1)
            logits = _fast_logits(model, cache, input_batch, device, **token)
            loss = F.cross_entropy(logits.float(), target_batch.to(device))
            loss.backward()
            if controls is not None:
                controls.clip(model, global_step + 1)
            optimizer.step()
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                train_loss = _fast_loss_loader(model, cache, train_loader, device, eval_iter, token)
                val_loss = _fast_loss_loader(model, cache, val_loader, device, eval_iter, token)
                model.train()
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                stop = bonus_training.log_evaluation(epoch, global_step, train_loss, val_loss, model, controls)
                if stop:
                    break
        if stop:  # early stopping: out of both loops, without this epoch's accuracy line
            break
        train_accuracy = _accuracy(*_fast_predictions(model, cache, train_loader, device, eval_iter, token))
        val_accuracy = _accuracy(*_fast_predictions(model, cache, val_loader, device, eval_iter, token))
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | "
              f"Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    if controls is not None:
        controls.finish(model)
    return train_losses, val_losses, train_accs, val_accs, examples_seen
