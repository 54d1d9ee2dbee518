"""Metrics beyond the chapter's accuracy: predictions, then scikit-learn's confusion matrix, precision, recall, F1."""

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
    from sklearn.metrics import confusion_matrix  # here: scikit-learn takes a second to import

    return confusion_matrix(_ints(targets), _ints(predictions), labels=list(range(num_classes))).tolist()


def classification_metrics(targets, predictions, num_classes=2, positive_class=1):
    """Accuracy, precision/recall/F1 (of the spam class when binary, per class always), the confusion matrix."""
    from sklearn.metrics import precision_recall_fscore_support

    targets, predictions, classes = _ints(targets), _ints(predictions), list(range(num_classes))
    matrix = confusion_matrix_from_predictions(targets, predictions, num_classes)
    # a class never predicted (or never present) has precision (recall) 0 by convention, without a warning
    precision, recall, f1, support = precision_recall_fscore_support(targets, predictions, labels=classes,
                                                                     zero_division=0)
    per_class = [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                 for p, r, f, n in zip(precision, recall, f1, support)]
    total = len(targets)
    result = {"accuracy": sum(matrix[c][c] for c in classes) / total if total else 0.0, "num_examples": total,
              "confusion_matrix": matrix, "per_class": per_class, "macro_f1": float(sum(f1) / num_classes)}
    if num_classes == 2:
        result.update({k: per_class[positive_class][k] for k in ("precision", "recall", "f1")})
        result["positive_class"] = positive_class
    return result


def metrics_from_confusion_matrix(matrix, positive_class=1):
    """classification_metrics of the examples a confusion matrix counts (matrix[true][predicted])."""
    pairs = [(t, p) for t, row in enumerate(matrix) for p, count in enumerate(row) for _ in range(int(count))]
    return classification_metrics([t for t, _ in pairs], [p for _, p in pairs], len(matrix), positive_class)


def _ints(values):
    """Labels as a plain list of ints (tensors, arrays and lists alike)."""
    return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


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
    """A heat map of matrix[true][predicted] with the counts written in; returns the (open) Figure.

    In a notebook it shows at the end of the cell or at plt.show(); a script saves it, then plt.close(fig).
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 1.2 * len(label_names)
    fig, ax = plt.subplots(figsize=(size + 2, size + 1.5))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(label_names)).plot(ax=ax, cmap="Blues",
                                                                                      values_format="d")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig
