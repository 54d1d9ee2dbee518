"""Using a trained classifier: class probabilities and labels for any messages, from memory or a saved file."""

import torch

from beyond.bonus_training import saved_average_embeddings, select_token_logits
from beyond.checkpoints import load_classifier
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


def class_probabilities(texts, model, tokenizer, device, max_length=None, *, trainable_token_pos="last",
                        average_embeddings=False, pad_token_id=50256, batch_size=32, pad=True):
    """Softmax over the classes for each message, a float tensor [len(texts), num_classes] on the CPU.

    Each message is encoded as classify_review encodes it. With max_length every message is padded to the same
    length (as in training), so batches give the same numbers as one message at a time; without it, or with
    pad=False (a classifier trained without padding), each message runs alone, unpadded.
    """
    if isinstance(texts, str):
        texts = [texts]
    model.eval()
    context_length = getattr(model, "module", model).pos_emb.weight.shape[0]  # a DDP wrapper or the model
    encoded = [encode_for_classifier(text, tokenizer, context_length, max_length, pad_token_id, pad=pad)
               or [pad_token_id] for text in texts]  # an empty message still needs one token
    step = batch_size if max_length is not None and pad else 1
    chunks = []
    with torch.no_grad():
        for start in range(0, len(encoded), step):
            batch = torch.tensor(encoded[start:start + step], device=device)
            logits = select_token_logits(model(batch), batch, trainable_token_pos, pad_token_id, average_embeddings)
            chunks.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.out_head.out_features)


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
