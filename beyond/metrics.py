"""Metrics beyond the chapter's accuracy: predictions, the confusion matrix, precision, recall and F1."""

import torch

from beyond.bonus_training import select_token_logits


def predict_labels(model, data_loader, device, num_batches=None, *, trainable_token_pos="last",
                   average_embeddings=False, pad_token_id=50256):
    """(targets, predicted labels) as CPU tensors over the first num_batches batches, running the whole model."""
    model.eval()
    targets, predictions = [], []
    with torch.no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if num_batches is not None and i >= num_batches:
                break
            input_batch = input_batch.to(device)
            logits = select_token_logits(model(input_batch), input_batch, trainable_token_pos, pad_token_id,
                                         average_embeddings)
            predictions.append(logits.argmax(dim=-1).cpu())
            targets.append(target_batch.cpu())
    if not targets:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(targets), torch.cat(predictions)


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


def classification_metrics(targets, predictions, num_classes=2, positive_class=1):
    """Accuracy, precision/recall/F1 (of the spam class when binary, per class always), the confusion matrix."""
    matrix = confusion_matrix_from_predictions(targets, predictions, num_classes)
    return metrics_from_confusion_matrix(matrix, positive_class)


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


def plot_confusion_matrix(matrix, label_names, title="Confusion matrix"):
    """A heat map of matrix[true][predicted] with the counts written in; returns the Figure."""
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
    plt.close(fig)  # a notebook shows the returned figure once; scripts keep no open figures
    return fig
