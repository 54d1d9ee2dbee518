"""The chapter's functions: the book's signatures, last-token loss and accuracy, the loop, plots, classify_review."""

import inspect
import math
import os

import pytest
import torch

import train_classifier as tc
from beyond.experiments import replace_head_and_freeze

from tiny import tiny_model


class FixedLogits(torch.nn.Module):
    """Returns given logits [b, t, c] whatever the input; records the mode it was called in."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.logits[: x.shape[0]]


class ParityModel(torch.nn.Module):
    """Predicts class (token id % 2) at every position: known predictions for accuracy tests."""

    def forward(self, x):
        odd = (x % 2).float()
        return torch.stack([1 - odd, odd], dim=-1)


def count_params(module):
    return sum(p.numel() for p in module.parameters())


# The chapter's functions as the book prints them (ch06), in its order: code copied from it calls them unchanged.
BOOK_SIGNATURES = {
    "calc_accuracy_loader": "(data_loader, model, device, num_batches=None)",
    "calc_loss_batch": "(input_batch, target_batch, model, device)",
    "calc_loss_loader": "(data_loader, model, device, num_batches=None)",
    "evaluate_model": "(model, train_loader, val_loader, device, eval_iter)",
    "train_classifier_simple": "(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter)",
    "plot_values": "(epochs_seen, examples_seen, train_values, val_values, label='loss')",
    "classify_review": "(text, model, tokenizer, device, max_length=None, pad_token_id=50256)",
}


def test_the_chapters_functions_have_the_books_signatures_in_the_books_order():
    public = [name for name, f in vars(tc).items() if inspect.isfunction(f) and not name.startswith("_")]
    assert public == list(BOOK_SIGNATURES)  # nothing else, in the book's order
    for name, signature in BOOK_SIGNATURES.items():
        assert str(inspect.signature(getattr(tc, name))) == signature, name


def hand_cross_entropy(rows, targets):
    total = 0.0
    for row, target in zip(rows, targets):
        log_sum = math.log(sum(math.exp(v) for v in row))
        total += log_sum - row[target]
    return total / len(rows)


def test_last_token_loss_equals_hand_computed_cross_entropy():
    logits = torch.tensor([[[9.0, -9.0], [0.5, 2.0]],
                           [[9.0, -9.0], [1.0, -1.0]],
                           [[-9.0, 9.0], [0.0, 3.0]]])
    targets = torch.tensor([1, 1, 0])
    model = FixedLogits(logits)
    inputs = torch.zeros(3, 2, dtype=torch.long)
    loss = tc.calc_loss_batch(inputs, targets, model, "cpu")
    expected = hand_cross_entropy([[0.5, 2.0], [1.0, -1.0], [0.0, 3.0]], [1, 1, 0])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_calc_accuracy_loader_on_known_predictions():
    model = ParityModel()
    # last tokens: 1,2,3,4 | 5,6,7,8 -> predictions 1,0,1,0 | 1,0,1,0
    batches = [(torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4]]), torch.tensor([1, 0, 0, 0])),  # 3 of 4
               (torch.tensor([[0, 5], [0, 6], [0, 7], [0, 8]]), torch.tensor([1, 1, 1, 1]))]  # 2 of 4
    assert tc.calc_accuracy_loader(batches, model, "cpu") == pytest.approx(5 / 8)
    assert tc.calc_accuracy_loader(batches, model, "cpu", num_batches=1) == pytest.approx(3 / 4)
    assert tc.calc_accuracy_loader(batches, model, "cpu", num_batches=99) == pytest.approx(5 / 8)
    assert math.isnan(tc.calc_accuracy_loader([], model, "cpu"))


def test_calc_loss_loader_and_evaluate_model_modes():
    logits = torch.tensor([[[0.0, 1.0]], [[2.0, 0.0]]])
    model = FixedLogits(logits)
    batches = [(torch.zeros(2, 1, dtype=torch.long), torch.tensor([1, 0])),
               (torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 1]))]
    one = hand_cross_entropy([[0, 1], [2, 0]], [1, 0])
    two = hand_cross_entropy([[0, 1], [2, 0]], [0, 1])
    assert tc.calc_loss_loader(batches, model, "cpu") == pytest.approx((one + two) / 2, rel=1e-6)
    assert tc.calc_loss_loader(batches, model, "cpu", num_batches=1) == pytest.approx(one, rel=1e-6)
    assert math.isnan(tc.calc_loss_loader([], model, "cpu"))
    model.train()
    model.modes.clear()
    train_loss, val_loss = tc.evaluate_model(model, batches, batches[1:], "cpu", eval_iter=1)
    assert (train_loss, val_loss) == (pytest.approx(one, rel=1e-6), pytest.approx(two, rel=1e-6))
    assert model.modes == [False, False] and model.training  # evaluated in eval mode, back to train mode


def separable_batches(n_batches=4, batch_size=4, seq_len=6, seed=0):
    """Class 1 messages end in token 777, class 0 in token 111: learnable from the last position."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        x = torch.randint(0, 1000, (batch_size, seq_len), generator=g)
        y = torch.randint(0, 2, (batch_size,), generator=g)
        x[:, -1] = torch.where(y == 1, 777, 111)
        batches.append((x, y))
    return batches


def test_train_classifier_simple_lowers_loss_and_returns_histories(capsys):
    model = replace_head_and_freeze(tiny_model(), num_classes=2)
    batches = separable_batches()
    before = tc.calc_loss_loader(batches, model, "cpu")
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    seen_steps = []
    optimizer.register_step_post_hook(lambda *_: seen_steps.append(len(seen_steps)))
    result = tc.train_classifier_simple(model, batches, batches[:2], optimizer, "cpu", num_epochs=3, eval_freq=2,
                                        eval_iter=2)
    train_losses, val_losses, train_accs, val_accs, examples_seen = result
    # 4 steps per epoch, 12 in all; evaluations at steps 0, 2, ..., 10
    assert len(train_losses) == len(val_losses) == 6
    assert len(train_accs) == len(val_accs) == 3
    assert examples_seen == 3 * 4 * 4
    assert seen_steps == list(range(12))
    after = tc.calc_loss_loader(batches, model, "cpu")
    assert after < before * 0.7
    assert train_accs[-1] == 1.0
    out = capsys.readouterr().out
    assert "Ep 1 (Step 000000): Train loss " in out and ", Val loss " in out
    assert "Ep 3 (Step 000010)" in out
    assert out.count("Training accuracy: ") == 3 and "% | Validation accuracy: " in out


def test_plot_values_returns_figure(tmp_path):
    path = tmp_path / "loss.png"
    fig = tc.plot_values(torch.linspace(0, 5, 4), torch.linspace(0, 100, 4), [1.0, 0.8, 0.5, 0.4],
                         [1.1, 0.9, 0.7, 0.6], label="loss")
    fig.savefig(path)
    assert fig.axes[0].get_xlabel() == "Epochs" and fig.axes[0].get_ylabel() == "Loss"
    assert fig.axes[1].get_xlabel() == "Examples seen"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["Training loss", "Validation loss"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["loss.png"]


class WordTokenizer:
    def encode(self, text, **kwargs):
        return [len(word) for word in text.split()]


class RecordingClassifier(torch.nn.Module):
    """Context of 6 tokens; predicts spam when the last input token is odd; records its input."""

    def __init__(self):
        super().__init__()
        self.pos_emb = torch.nn.Embedding(6, 2)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.tolist())
        return ParityModel()(x)


def test_classify_review_pads_truncates_and_answers_in_the_chapters_words():
    model = RecordingClassifier()
    tok = WordTokenizer()
    assert tc.classify_review("a bb ccc", model, tok, "cpu", max_length=5) == "not spam"  # last token is pad (even)
    assert model.inputs[-1] == [[1, 2, 3, 50256, 50256]]
    assert tc.classify_review("a bb ccc", model, tok, "cpu", max_length=5, pad_token_id=7) == "spam"
    assert model.inputs[-1] == [[1, 2, 3, 7, 7]]
    # truncated to min(max_length, context length 6)
    tc.classify_review("a b c d e f g h", model, tok, "cpu", max_length=120)
    assert len(model.inputs[-1][0]) == 6
    tc.classify_review("aaa bb c dddd", model, tok, "cpu", max_length=2)
    assert model.inputs[-1] == [[3, 2]]
    assert tc.classify_review("aaa", model, tok, "cpu") == "spam"  # no max_length: no padding
    assert model.inputs[-1] == [[3]]


def test_classify_review_with_the_real_tokenizer_on_the_tiny_model():
    from beyond.gpt2_tokenizer import get_gpt2_tokenizer

    model = replace_head_and_freeze(tiny_model(), num_classes=2)
    tokenizer = get_gpt2_tokenizer()
    answer = tc.classify_review("You are a winner you have been specially selected to receive $1000 cash.",
                                model, tokenizer, "cpu", max_length=120)
    assert answer in ("spam", "not spam")
