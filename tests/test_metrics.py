"""Metrics beyond accuracy: predictions, confusion matrix, precision, recall, F1, the table and the plot."""

import json

import pytest
import torch

from beyond import bonus_training, metrics

from tiny import TableLogits


def test_metrics_from_a_known_confusion_matrix():
    # 10 ham: 8 right, 2 called spam; 5 spam: 4 right, 1 missed
    m = metrics.metrics_from_confusion_matrix([[8, 2], [1, 4]])
    assert m["accuracy"] == pytest.approx(12 / 15)
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert m["per_class"][0]["recall"] == pytest.approx(0.8) and m["per_class"][0]["support"] == 10
    assert m["num_examples"] == 15


def test_classification_metrics_counts_every_example_and_handles_three_classes():
    # token id t -> logits picking class t % 3 at every position
    table = [[1.0 if c == t % 3 else 0.0 for c in range(3)] for t in range(9)]
    model = TableLogits(table)
    ids = torch.tensor([[0], [1], [2], [3], [4], [5], [7]])  # predictions 0 1 2 0 1 2 1
    targets = torch.tensor([0, 1, 2, 1, 1, 0, 2])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, targets), batch_size=3)
    m = metrics.classification_metrics(*metrics.predict_labels(model, loader, "cpu"), num_classes=3)
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 2, 0], [0, 1, 1]]
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert "precision" not in m  # per class only when there are more than two
    assert m["per_class"][1]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"][2]["recall"] == pytest.approx(1 / 2)
    assert m["macro_f1"] == pytest.approx(sum(p["f1"] for p in m["per_class"]) / 3)
    json.dumps(m)  # goes into metrics.json as is
    assert len(metrics.predict_labels(model, loader, "cpu", num_batches=1)[0]) == 3


def test_classification_metrics_reads_the_chosen_token_position():
    pad = 50256
    table = torch.zeros(50257, 2)
    table[5, 1] = 1.0  # token 5 says spam, everything else (pad included) says ham
    model = TableLogits(table.tolist())
    ids = torch.tensor([[5, pad, pad], [7, 5, pad]])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, torch.tensor([1, 1])), batch_size=2)
    def matrix(**token):
        return metrics.classification_metrics(*metrics.predict_labels(model, loader, "cpu", **token))

    assert matrix()["recall"] == 0.0  # the last position is a pad
    assert matrix(trainable_token_pos="first")["confusion_matrix"] == \
        [[0, 0], [1, 1]]
    assert matrix(trainable_token_pos="flexible")["recall"] == 1.0
    # mean over the real tokens only (pads left out): [0, 1] and ([0, 0] + [0, 1]) / 2
    logits = bonus_training.select_token_logits(model(ids), ids, average_embeddings="real_tokens")
    assert torch.allclose(logits, torch.tensor([[0.0, 1.0], [0.0, 0.5]]))


def test_confusion_matrix_plot_and_table(tmp_path):
    m = metrics.metrics_from_confusion_matrix([[8, 2], [1, 4]])
    fig = metrics.plot_confusion_matrix(m["confusion_matrix"], ["ham", "spam"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["8", "2", "1", "4"]
    table = metrics.format_metrics_table({"validation": m, "test": m}, ["ham", "spam"])
    assert "66.67%" in table and "80.00%" in table and table.count("confusion matrix") == 2


def test_plot_is_an_open_figure_a_notebook_shows_and_metrics_follow_scikit_learns_conventions():
    import matplotlib.pyplot as plt

    fig = metrics.plot_confusion_matrix([[3, 0], [2, 0]], ["ham", "spam"], title="never says spam")
    assert plt.fignum_exists(fig.number)  # plt.show() (or the end of a notebook cell) shows it
    plt.close(fig)
    m = metrics.classification_metrics(torch.tensor([0, 0, 0, 1, 1]), torch.zeros(5, dtype=torch.long))
    assert m["confusion_matrix"] == [[3, 0], [2, 0]] and m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == m["recall"] == m["f1"] == 0.0  # spam never predicted: 0 by convention
    assert m["per_class"][0] == {"precision": 0.6, "recall": 1.0, "f1": pytest.approx(0.75), "support": 3}
