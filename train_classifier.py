"""The chapter's classification fine-tuning, in the chapter's order: head swap, loss, accuracy, loop, use.

Everything beyond the chapter (the fast trainer, the bonus experiments, metrics, saved classifiers, the command
line) lives in its own module and imports this one. `python train_classifier.py` runs the command line (cli.py).

The bonus experiments' switches that must live inside these functions are keyword-only arguments whose defaults
are the chapter's behaviour: with the defaults, each function computes exactly what the chapter's does.
"""

import sys

import torch

TRAINABLE_LAYERS = ("last_layer", "last_block", "last_two_blocks", "all")
TRAINABLE_TOKEN_POSITIONS = ("last", "first", "flexible")


def replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block"):
    """Freeze the model, swap its 50257-word output layer for a num_classes head, unfreeze the top; returns model.

    trainable_layers (bonus): what trains besides the new head; the chapter trains the last block and final_norm.
    """
    if trainable_layers not in TRAINABLE_LAYERS:
        raise ValueError(f"Unknown trainable_layers {trainable_layers!r}; choose one of {', '.join(TRAINABLE_LAYERS)}.")
    for param in model.parameters():
        param.requires_grad = False
    # A new Linear layer's parameters have requires_grad=True: the head always trains.
    model.out_head = torch.nn.Linear(in_features=model.tok_emb.weight.shape[1], out_features=num_classes)
    unfrozen = {"last_layer": [], "last_block": [model.trf_blocks[-1], model.final_norm],
                "last_two_blocks": [model.trf_blocks[-2:], model.final_norm], "all": [model]}[trainable_layers]
    for module in unfrozen:
        for param in module.parameters():
            param.requires_grad = True
    return model


def select_token_logits(logits, input_batch, trainable_token_pos="last", pad_token_id=50256,
                        average_embeddings=False):
    """The logits the classifier reads: the chapter's `logits[:, -1, :]`, or a bonus experiment's choice."""
    if average_embeddings:  # bonus: the mean over the real (non-padding) tokens instead of one position
        mask = (input_batch != pad_token_id).unsqueeze(-1).to(device=logits.device, dtype=logits.dtype)
        return (logits * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if trainable_token_pos == "last":  # the chapter: the only token that attended to the whole message
        return logits[:, -1, :]
    if trainable_token_pos == "first":
        return logits[:, 0, :]
    if trainable_token_pos == "flexible":  # the last real token, just before the (right) padding
        last_real = ((input_batch != pad_token_id).sum(dim=1) - 1).clamp(min=0)
        return logits[torch.arange(logits.shape[0], device=logits.device), last_real.to(logits.device)]
    raise ValueError(f"Unknown trainable_token_pos {trainable_token_pos!r}; "
                     f"choose one of {', '.join(TRAINABLE_TOKEN_POSITIONS)}.")


def calc_accuracy_loader(data_loader, model, device, num_batches=None, *,
                         trainable_token_pos="last", average_embeddings=False, pad_token_id=50256):
    """Fraction of correct predictions over the first num_batches batches (all when None)."""
    model.eval()
    correct_predictions, num_examples = 0, 0
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        input_batch, target_batch = input_batch.to(device), target_batch.to(device)
        with torch.no_grad():
            logits = select_token_logits(model(input_batch), input_batch,  # the last token's logits
                                         trainable_token_pos, pad_token_id, average_embeddings)
        predicted_labels = torch.argmax(logits, dim=-1)
        num_examples += predicted_labels.shape[0]
        correct_predictions += (predicted_labels == target_batch).sum().item()
    # an empty loader has no accuracy: nan says so instead of a ZeroDivisionError
    return correct_predictions / num_examples if num_examples else float("nan")


def calc_loss_batch(input_batch, target_batch, model, device, *,
                    trainable_token_pos="last", average_embeddings=False, pad_token_id=50256, ignore_index=-100):
    """Cross entropy of one batch on the last token's logits (ignore_index, bonus: a target to skip)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = select_token_logits(model(input_batch), input_batch,  # the last token's logits
                                 trainable_token_pos, pad_token_id, average_embeddings)
    return torch.nn.functional.cross_entropy(logits, target_batch, ignore_index=ignore_index)


def calc_loss_loader(data_loader, model, device, num_batches=None, *,
                     trainable_token_pos="last", average_embeddings=False, pad_token_id=50256, ignore_index=-100):
    """Mean batch loss over the first num_batches batches (all when None); nan for an empty loader."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        loss = calc_loss_batch(input_batch, target_batch, model, device, trainable_token_pos=trainable_token_pos,
                               average_embeddings=average_embeddings, pad_token_id=pad_token_id,
                               ignore_index=ignore_index)
        total_loss += loss.item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter, *,
                   trainable_token_pos="last", average_embeddings=False, pad_token_id=50256, ignore_index=-100):
    """(train_loss, val_loss) on eval_iter batches each, in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter,
                                      trainable_token_pos=trainable_token_pos, average_embeddings=average_embeddings,
                                      pad_token_id=pad_token_id, ignore_index=ignore_index)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter,
                                    trainable_token_pos=trainable_token_pos, average_embeddings=average_embeddings,
                                    pad_token_id=pad_token_id, ignore_index=ignore_index)
    model.train()
    return train_loss, val_loss


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                            *, trainable_token_pos="last", average_embeddings=False, pad_token_id=50256,
                            ignore_index=-100, accumulation_steps=1):
    """The chapter's loop; returns (train_losses, val_losses, train_accs, val_accs, examples_seen).

    The keyword arguments are the bonus experiments' switches (their defaults: the chapter's run): the token that
    classifies and ignore_index go to every loss and accuracy as they are; accumulation_steps > 1 adds up the
    gradients of that many batches before each optimizer step.
    """
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for batch_idx, (input_batch, target_batch) in enumerate(train_loader):
            if batch_idx % accumulation_steps == 0:  # every batch by default, as in the chapter
                optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device, trainable_token_pos=trainable_token_pos,
                                   average_embeddings=average_embeddings, pad_token_id=pad_token_id,
                                   ignore_index=ignore_index)
            (loss / accumulation_steps).backward()
            if (batch_idx + 1) % accumulation_steps == 0 or batch_idx + 1 == len(train_loader):
                optimizer.step()
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter, trainable_token_pos=trainable_token_pos,
                    average_embeddings=average_embeddings, pad_token_id=pad_token_id, ignore_index=ignore_index)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        # accuracies on eval_iter batches only, as in the chapter: a cheap signal, not the final figure
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter,
                                              trainable_token_pos=trainable_token_pos,
                                              average_embeddings=average_embeddings, pad_token_id=pad_token_id)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter,
                                            trainable_token_pos=trainable_token_pos,
                                            average_embeddings=average_embeddings, pad_token_id=pad_token_id)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss"):
    """Training and validation curves against epochs (bottom axis) and examples seen (top); returns the Figure."""
    import matplotlib.pyplot as plt  # here, not at the top: training needs no plotting library

    fig, ax1 = plt.subplots(figsize=(5, 3))
    plt.close(fig)  # a notebook shows the returned figure once; scripts keep no open figures
    ax1.plot(_floats(epochs_seen), _floats(train_values), label=f"Training {label}")
    ax1.plot(_floats(epochs_seen), _floats(val_values), linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel(label.capitalize())
    ax1.legend()
    ax2 = ax1.twiny()  # an invisible second plot gives the top axis its examples-seen scale
    ax2.plot(_floats(examples_seen), _floats(train_values), alpha=0)
    ax2.set_xlabel("Examples seen")
    fig.tight_layout()
    return fig


def _floats(values):
    """Tensors, arrays and lists alike, as plain floats for matplotlib."""
    return [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def classify_review(text, model, tokenizer, device, max_length=None, pad_token_id=50256, *,
                    trainable_token_pos="last"):
    """"spam" or "not spam" for one message, truncated and padded as the training data was."""
    model.eval()
    input_ids = tokenizer.encode(text, disallowed_special=())  # as SpamDataset: "<|endoftext|>" is plain text
    supported_context_length = model.pos_emb.weight.shape[0]
    # Truncate to the training length (never past the model's context), then pad up to it
    limit = supported_context_length if max_length is None else min(max_length, supported_context_length)
    input_ids = input_ids[:limit]
    if max_length is not None:
        input_ids += [pad_token_id] * (limit - len(input_ids))
    input_tensor = torch.tensor(input_ids or [pad_token_id], device=device).unsqueeze(0)  # add batch dimension
    with torch.no_grad():
        logits = select_token_logits(model(input_tensor), input_tensor, trainable_token_pos,
                                     pad_token_id=pad_token_id)
    predicted_label = torch.argmax(logits, dim=-1).item()
    return "spam" if predicted_label == 1 else "not spam"


if __name__ == "__main__":
    # The command line is beyond the chapter: beyond/cli.py imports this module, never the reverse, so the
    # hand-over happens only when this file runs as a script.
    from beyond import cli

    sys.exit(cli.main())
