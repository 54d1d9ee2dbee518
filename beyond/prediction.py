"""Using a trained classifier: class probabilities and labels for any messages, from memory or a saved file.

class_probabilities is the one batched way to get P(spam): predict, explain, the attacks, the notebooks and the
benchmarks all call it.
"""

import torch

from beyond.activation_cache import autocast_for
from beyond.bonus_training import saved_average_embeddings, select_token_logits
from beyond.checkpoints import load_classifier
from beyond.fast_trainer import last_block_at, why_not_standard_gpt
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from beyond.model_setup import resolve_device


def encode_for_classifier(text, tokenizer, context_length, max_length=None, pad_token_id=50256, *, pad=True):
    """A message's token ids as classify_review feeds them: cut to min(max_length, context_length), padded to it.

    pad=False: cut but not padded, as a classifier trained with --no-padding saw its messages.
    """
    ids = tokenizer.encode(text, disallowed_special=())  # exactly SpamDataset's encoding
    limit = context_length if max_length is None else min(max_length, context_length)
    ids = list(ids[:limit])
    if max_length is not None and pad:
        ids += [pad_token_id] * (limit - len(ids))
    return ids


def class_probabilities(texts, model, tokenizer=None, device=None, max_length=None, *, trainable_token_pos="last",
                        average_embeddings=False, pad_token_id=50256, batch_size=32, pad=True, precision="fp32"):
    """Softmax over the classes for each message, a float tensor [len(texts), num_classes] on the CPU.

    texts: messages, encoded as classify_review encodes them (max_length: cut and padded to it; pad=False, as a
    classifier trained with --no-padding: cut only), or lists of token ids already encoded. Messages of equal
    length share a batch, so no padding is added that training did not add. Under the causal mask a token never
    sees what follows it, so each message runs only up to the token that is read (the same numbers, less work).
    precision "bf16": under bfloat16 autocast (faster on CPUs with bf16 units, not exact).
    """
    if isinstance(texts, str):
        texts = [texts]
    plain = getattr(model, "module", model)  # a DDP wrapper or the model
    device = next(plain.parameters()).device if device is None else device
    context_length = plain.pos_emb.weight.shape[0]
    rows = [encode_for_classifier(text, tokenizer, context_length, max_length, pad_token_id, pad=pad)
            if isinstance(text, str) else list(text) for text in texts]
    rows = [row or [pad_token_id] for row in rows]  # an empty message still needs one token
    # cut at the read position, each row's last token is the one read: the last block runs there only
    at_end = not average_embeddings and _reads_causally(plain)
    if at_end:
        rows = [row[:_read_position(row, trainable_token_pos, pad_token_id) + 1] for row in rows]
    at_end = at_end and len(plain.trf_blocks) > 0 and not why_not_standard_gpt(plain)
    by_length = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    out = torch.zeros(len(rows), plain.out_head.out_features)
    model.eval()
    with torch.no_grad(), autocast_for(precision, device):
        for indices in by_length.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batch = torch.tensor([rows[i] for i in chunk], device=device)
                if at_end:
                    logits = _last_token_logits(plain, batch)
                else:
                    logits = select_token_logits(model(batch), batch, trainable_token_pos, pad_token_id,
                                                 average_embeddings)
                out[chunk] = torch.softmax(logits.float(), dim=-1).cpu()
    return out


def _last_token_logits(model, batch):
    """model(batch)'s logits at each row's last token [b, classes], the last block computed there only."""
    x = model.drop_emb(model.tok_emb(batch) + model.pos_emb(torch.arange(batch.shape[1], device=batch.device)))
    for block in model.trf_blocks[:-1]:
        x = block(x)
    last = torch.full((batch.shape[0],), batch.shape[1] - 1, device=batch.device)
    return model.out_head(model.final_norm(last_block_at(model.trf_blocks[-1], x, last)))


def _reads_causally(model):
    """True when a token's output ignores every token after it (the causal mask is on in every block)."""
    return all(getattr(block.att, "causal", False) for block in model.trf_blocks)


def _read_position(ids, trainable_token_pos, pad_token_id):
    """The position select_token_logits reads in one row of ids."""
    if trainable_token_pos == "first":
        return 0
    if trainable_token_pos == "flexible":  # the last real token, just before the (right) padding
        return max(sum(1 for i in ids if i != pad_token_id) - 1, 0)
    return len(ids) - 1  # "last" (an unknown name fails in select_token_logits, naming the choices)


def predict(texts, model, tokenizer, device, max_length=None, label_names=("ham", "spam"), pad_token_id=50256,
            *, trainable_token_pos="last", average_embeddings=False, batch_size=32, pad=True):
    """(label, probability of that label) for each message, scored as classify_review scores one."""
    probabilities = class_probabilities(texts, model, tokenizer, device, max_length,
                                        trainable_token_pos=trainable_token_pos,
                                        average_embeddings=average_embeddings, pad_token_id=pad_token_id,
                                        batch_size=batch_size, pad=pad)
    best, label_ids = probabilities.max(dim=-1)
    names = list(label_names or [])
    return [(names[i] if i < len(names) else str(i), p) for i, p in zip(label_ids.tolist(), best.tolist())]


def predict_from_checkpoint(checkpoint, texts, device="cpu", tokenizer=None, models_dir=None, *, max_length=None,
                            label_names=None):
    """One call from a saved classifier (file, output folder, or the chapter's state_dict) to (label, probability).

    max_length and label_names replace the file's (a chapter state_dict's default: 120, "not spam"/"spam").
    """
    device = resolve_device(device) if isinstance(device, str) else device
    model, info = load_classifier(checkpoint, device=device, models_dir=models_dir)
    if tokenizer is None:
        tokenizer = get_gpt2_tokenizer(models_dir)
    extra = info.get("extra") or {}
    return predict(texts, model, tokenizer, device, max_length=max_length or info.get("max_length"),
                   label_names=label_names or info.get("label_names") or ("ham", "spam"),
                   pad_token_id=extra.get("pad_token_id", 50256),
                   trainable_token_pos=extra.get("trainable_token_pos", "last"),
                   average_embeddings=saved_average_embeddings(extra),
                   pad=info.get("padded", True))
