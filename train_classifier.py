"""The chapter's classification fine-tuning, in the chapter's order: accuracy, loss, the loop, plots, use.

Everything beyond the chapter (the head swap with the bonus choices, the bonus experiments' switches, the fast
trainer, metrics, saved classifiers, the command line) lives in the package beyond/, which imports this module.
`python train_classifier.py` runs the command line (beyond/cli.py).
"""

import sys

import torch


def calc_accuracy_loader(data_loader, model, device, num_batches=None):
    """Fraction of correct predictions over the first num_batches batches (all when None)."""
    model.eval()
    correct_predictions, num_examples = 0, 0
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        input_batch, target_batch = input_batch.to(device), target_batch.to(device)
        with torch.no_grad():
            logits = model(input_batch)[:, -1, :]  # Logits of last output token
        predicted_labels = torch.argmax(logits, dim=-1)
        num_examples += predicted_labels.shape[0]
        correct_predictions += (predicted_labels == target_batch).sum().item()
    # an empty loader has no accuracy: nan says so instead of a ZeroDivisionError
    return correct_predictions / num_examples if num_examples else float("nan")


def calc_loss_batch(input_batch, target_batch, model, device):
    """Cross entropy of one batch on the last token's logits."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, -1, :]  # Logits of last output token
    return torch.nn.functional.cross_entropy(logits, target_batch)


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """Mean batch loss over the first num_batches batches (all when None); nan for an empty loader."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        loss = calc_loss_batch(input_batch, target_batch, model, device)
        total_loss += loss.item()
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train_loss, val_loss) on eval_iter batches each, in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter):
    """The chapter's loop; returns (train_losses, val_losses, train_accs, val_accs, examples_seen)."""
    # Initialize lists to track losses and examples seen
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1

    # Main training loop
    for epoch in range(num_epochs):
        model.train()  # Set model to training mode

        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients
            examples_seen += input_batch.shape[0]  # track examples instead of tokens
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

        # Accuracies after each epoch, on eval_iter batches only: a cheap signal, not the final figure
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | ", end="")
        print(f"Validation accuracy: {val_accuracy * 100:.2f}%")
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


def classify_review(text, model, tokenizer, device, max_length=None, pad_token_id=50256):
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
        logits = model(input_tensor)[:, -1, :]  # Logits of the last output token
    predicted_label = torch.argmax(logits, dim=-1).item()
    return "spam" if predicted_label == 1 else "not spam"


if __name__ == "__main__":
    # The command line is beyond the chapter: beyond/cli.py imports this module, never the reverse, so the
    # hand-over happens only when this file runs as a script.
    from beyond import cli

    sys.exit(cli.main())
