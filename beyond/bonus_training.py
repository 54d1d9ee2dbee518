"""The bonus experiments' loss, accuracy and loop: the chapter's functions with the bonus script's switches.

The chapter's train_classifier.py reads the last token's logits and steps the optimizer every batch. The book's
bonus script (ch06/02_bonus_additional-experiments/additional_experiments.py) threads switches through the same
functions: which token classifies, averaging the outputs, ignore_index and gradient accumulation. They live here,
with the bonus script's names and meanings; with the defaults each function computes exactly what the chapter's
does.
"""

import torch

TRAINABLE_TOKEN_POSITIONS = ("last", "first", "flexible")
# average_embeddings: False (one position), "all_positions" or True (the bonus script's: the mean over every
# position, padding included), or "real_tokens" (the mean over the message's own tokens, padding left out)
AVERAGE_EMBEDDINGS = ("all_positions", "real_tokens")


def read_positions(input_batch, trainable_token_pos="last", pad_token_id=50256):
    """The one position per row the classifier reads (LongTensor [batch], on the batch's device).

    "last": the chapter's, the last position; "first": position 0; "flexible": the last real token, just before
    the (right) padding, as in the bonus script (a row of padding only reads position 0).
    """
    b, t = input_batch.shape
    if trainable_token_pos == "last":
        return torch.full((b,), t - 1, dtype=torch.long, device=input_batch.device)
    if trainable_token_pos == "first":
        return torch.zeros(b, dtype=torch.long, device=input_batch.device)
    if trainable_token_pos == "flexible":
        return ((input_batch != pad_token_id).sum(dim=1) - 1).clamp(min=0).long()
    raise ValueError(f"Unknown trainable_token_pos {trainable_token_pos!r}; "
                     f"choose one of {', '.join(TRAINABLE_TOKEN_POSITIONS)}.")


def select_token_logits(logits, input_batch, trainable_token_pos="last", pad_token_id=50256,
                        average_embeddings=False):
    """The logits [batch, classes] the classifier reads: one position's, or a mean over positions.

    As in the bonus script, "flexible" is checked first (it ignores average_embeddings); otherwise
    average_embeddings "all_positions" (or True) averages every position, padding included, "real_tokens" only
    the message's own tokens.
    """
    if trainable_token_pos == "flexible" or not average_embeddings:
        positions = read_positions(input_batch, trainable_token_pos, pad_token_id).to(logits.device)
        return logits[torch.arange(logits.shape[0], device=logits.device), positions]
    read_positions(input_batch, trainable_token_pos, pad_token_id)  # an unknown position is still an error
    if average_embeddings is True or average_embeddings == "all_positions":
        return logits.mean(dim=1)
    if average_embeddings == "real_tokens":
        mask = (input_batch != pad_token_id).unsqueeze(-1).to(device=logits.device, dtype=logits.dtype)
        return (logits * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"Unknown average_embeddings {average_embeddings!r}; choose one of "
                     f"{', '.join(AVERAGE_EMBEDDINGS)} (or False).")


def saved_average_embeddings(extra):
    """A saved classifier's average_embeddings, from its extra settings: False, "all_positions" or "real_tokens"."""
    value = (extra or {}).get("average_embeddings", False)
    if value is True:  # written before "all_positions" existed, when the mean left the padding out
        return "real_tokens"
    return value or False


def calc_accuracy_loader(data_loader, model, device, num_batches=None, *, trainable_token_pos="last",
                         average_embeddings=False, pad_token_id=50256):
    """Fraction of correct predictions over the first num_batches batches (all when None); nan for none."""
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
    return correct_predictions / num_examples if num_examples else float("nan")


def calc_loss_batch(input_batch, target_batch, model, device, *, trainable_token_pos="last",
                    average_embeddings=False, pad_token_id=50256, ignore_index=-100):
    """Cross entropy of one batch on the logits the switches select (ignore_index: a target value to skip)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = select_token_logits(model(input_batch), input_batch, trainable_token_pos, pad_token_id,
                                 average_embeddings)
    return torch.nn.functional.cross_entropy(logits, target_batch, ignore_index=ignore_index)


def calc_loss_loader(data_loader, model, device, num_batches=None, **switches):
    """Mean batch loss over the first num_batches batches (all when None); nan for an empty loader."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += calc_loss_batch(input_batch, target_batch, model, device, **switches).item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter, **switches):
    """(train_loss, val_loss) on eval_iter batches each, in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter, **switches)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter, **switches)
    model.train()
    return train_loss, val_loss


def log_evaluation(epoch, global_step, train_loss, val_loss, model, controls=None):
    """Print one evaluation as the chapter does (plus the controls' state); True when the controls stop training."""
    print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
          + (controls.log_suffix() if controls is not None else ""))
    return controls is not None and controls.evaluated(model, val_loss, global_step)


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                            *, trainable_token_pos="last", average_embeddings=False, pad_token_id=50256,
                            ignore_index=-100, accumulation_steps=1, controls=None):
    """The bonus script's loop; returns (train_losses, val_losses, train_accs, val_accs, examples_seen).

    The token switches go to every loss and accuracy; accumulation_steps > 1 adds up the gradients of that many
    batches (each loss divided by it) before each optimizer step, and the last batch of an epoch always steps.
    controls (training_controls.TrainingControls; None: the chapter's run): the learning-rate schedule, counted
    in optimizer steps, clipping before each optimizer step, early stopping after an evaluation, and the best
    weights back at the end.
    """
    token = {"trainable_token_pos": trainable_token_pos, "average_embeddings": average_embeddings,
             "pad_token_id": pad_token_id}
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step, optimizer_step, stop = 0, -1, 0, False
    for epoch in range(num_epochs):
        model.train()
        for batch_idx, (input_batch, target_batch) in enumerate(train_loader):
            if controls is not None:
                controls.start_step(optimizer, optimizer_step)
            loss = calc_loss_batch(input_batch, target_batch, model, device, ignore_index=ignore_index, **token)
            (loss / accumulation_steps).backward()
            if (batch_idx + 1) % accumulation_steps == 0 or batch_idx + 1 == len(train_loader):
                if controls is not None:
                    controls.clip(model, optimizer_step)
                optimizer.step()
                optimizer.zero_grad()
                optimizer_step += 1
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter,
                                                      ignore_index=ignore_index, **token)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                stop = log_evaluation(epoch, global_step, train_loss, val_loss, model, controls)
                if stop:
                    break
        if stop:  # early stopping: out of both loops, without this epoch's accuracy line
            break
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter, **token)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter, **token)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    if controls is not None:
        controls.finish(model)
    return train_losses, val_losses, train_accs, val_accs, examples_seen
