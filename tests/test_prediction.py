"""Using a trained classifier: class_probabilities, predict and the predict command agree with classify_review."""


import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import gpt_model
import train_classifier as tc
from beyond import bonus_training, checkpoints, cli, prediction
from beyond.gpt2_tokenizer import get_gpt2_tokenizer
from beyond.synthetic_data import make_synthetic_spam_data

from tiny import tiny_classifier


@pytest.fixture(scope="module")
def tokenizer():

    return get_gpt2_tokenizer()


def test_predict_agrees_with_classify_review(tokenizer):
    model = tiny_classifier(seed=1)
    texts = ["You are a winner! Claim your prize now", "See you at lunch?", "", "<|endoftext|> hi"]
    results = prediction.predict(texts, model, tokenizer, "cpu", max_length=16, label_names=["ham", "spam"])
    assert len(results) == 4
    for text, (label, prob) in zip(texts, results):
        assert 0.5 <= prob <= 1.0
        expected = tc.classify_review(text, model, tokenizer, "cpu", max_length=16) if text else None
        if expected is not None:
            assert label == {"spam": "spam", "not spam": "ham"}[expected]
    # one message alone gives the same answer as inside a batch
    assert prediction.predict(texts[1], model, tokenizer, "cpu", max_length=16)[0][1] == pytest.approx(results[1][1])
    unpadded = prediction.predict(texts[:2], model, tokenizer, "cpu")
    assert len(unpadded) == 2 and all(0.5 <= p <= 1 for _, p in unpadded)


class PlainTokenizer:
    """A tokenizer without tiktoken's disallowed_special switch: one token per character."""

    def encode(self, text, **kwargs):
        return [ord(c) % 1000 for c in text]


def test_classify_review_and_predict_encode_alike():
    model = tiny_classifier(seed=3)
    texts = ["win a prize now", "lunch?", "x" * 40, "<|endoftext|> is text here"]
    for max_length in (8, 16, None):
        one_by_one = [tc.classify_review(t, model, PlainTokenizer(), "cpu", max_length) for t in texts]
        predicted = prediction.predict(texts, model, PlainTokenizer(), "cpu", max_length,
                               label_names=("not spam", "spam"))  # no TypeError: the same fallback
        assert one_by_one == [label for label, _ in predicted], max_length
    # truncated to min(max_length, context_length), padded to it when max_length is given
    assert prediction.encode_for_classifier("abcdef", PlainTokenizer(), 4) == [97, 98, 99, 100]
    assert prediction.encode_for_classifier("ab", PlainTokenizer(), 1024, max_length=4, pad_token_id=7) == [97, 98, 7, 7]
    assert prediction.encode_for_classifier("abcdef", PlainTokenizer(), 3, max_length=5) == [97, 98, 99]


def _save_tiny(path, model, label_names=("ham", "spam"), **extra):
    checkpoints.save_classifier(path, model, gpt_model.TINY_CONFIG, label_names=label_names, max_length=12,
                       extra=extra or None)


def test_predict_from_checkpoint_folder_or_file(tmp_path, tokenizer):
    model = tiny_classifier(seed=2, num_classes=3)
    _save_tiny(tmp_path / "classifier.pt", model, ("a", "b", "c"), trainable_token_pos="first")
    texts = ["hello there", "free entry in a weekly competition"]
    expected = prediction.predict(texts, model, tokenizer, "cpu", max_length=12, label_names=("a", "b", "c"),
                          trainable_token_pos="first")
    for where in (tmp_path, tmp_path / "classifier.pt", str(tmp_path)):
        got = prediction.predict_from_checkpoint(where, texts, tokenizer=tokenizer)
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-6)
    with pytest.raises(FileNotFoundError, match="classifier"):
        prediction.predict_from_checkpoint(tmp_path / "nowhere", texts)


def test_predict_command_line(tmp_path, capsys):
    model = tiny_classifier(seed=3)
    _save_tiny(tmp_path / "classifier.pt", model)
    messages = tmp_path / "messages.txt"
    messages.write_text("first message\n\nsecond one\n", encoding="utf-8")
    assert cli.main(["predict", "--checkpoint", str(tmp_path), "quoted message", "--file", str(messages)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["quoted message", "first message", "second one"]
    assert all(line.split("\t")[0] in ("ham", "spam") and 0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "missing"), "hi"]) == 1
    assert "classifier" in capsys.readouterr().err
    assert cli.main(["predict", "--checkpoint", str(tmp_path)]) == 1
    assert cli.main(["predict", "--checkpoint", str(tmp_path), "via main"]) == 0  # the CLI's subcommand
    assert capsys.readouterr().out.strip().endswith("\tvia main")


# --- issue 10: a saved classifier predicts what it was trained to predict, whatever the bonus switches ---

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bonus_table  # after the sys.path line: the benchmark's ROWS are the switches every file must survive


@pytest.fixture(scope="module")
def sms_csv(tmp_path_factory):
    """A small synthetic data set with messages of different lengths (so padding matters)."""
    path = tmp_path_factory.mktemp("data") / "sms.csv"
    make_synthetic_spam_data(n_per_class=40).to_csv(path, index=False)
    return path


def _test_accuracy_from_checkpoint(out, data_dir):
    test = pd.read_csv(data_dir / "test.csv")
    labels = [label for label, _ in prediction.predict_from_checkpoint(out, list(test["Text"]))]
    names = json.loads((out / "metrics.json").read_text())["settings"]["label_names"]
    return sum(label == names[i] for label, i in zip(labels, test["Label"])) / len(test)


@pytest.mark.parametrize("row", [r for r in bonus_table.ROWS if r[0] not in bonus_table.OTHER_SIZES],
                         ids=lambda r: f"row{r[0]}")
def test_every_bonus_row_reloads_with_the_test_accuracy_training_printed(row, tmp_path, sms_csv):
    torch.set_num_threads(1)
    out, data_dir = tmp_path / "out", tmp_path / "data"
    code = cli.main(["--test-mode", "--data", str(sms_csv), "--data-dir", str(data_dir), "--output-dir", str(out),
                     "--num-epochs", "2", "--batch-size", "4", "--eval-freq", "20", "--eval-iter", "1",
                     "--lr", "2e-3", *row[6]])
    assert code == 0
    printed = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert _test_accuracy_from_checkpoint(out, data_dir) == pytest.approx(printed, abs=1e-9)


def test_no_padding_classifier_reads_the_last_real_token(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], 2)
    texts = ["short", "a somewhat longer message than that"]
    unpadded = prediction.class_probabilities(texts, model, tokenizer, "cpu", max_length=30, pad=False)
    alone = torch.cat([prediction.class_probabilities([t], model, tokenizer, "cpu") for t in texts])
    assert torch.allclose(unpadded, alone)
    padded = prediction.class_probabilities(texts, model, tokenizer, "cpu", max_length=30)
    assert not torch.allclose(padded, alone)  # the pad token's output is another number


# --- issue 18: one batched P(spam) function for every caller, with the numbers of the whole model ---

def whole_model_probabilities(rows, model, token_pos="last", average_embeddings=False):
    """The reference: each encoded row alone through the whole model, read as the chapter reads it."""
    out = []
    with torch.no_grad():
        for row in rows:
            batch = torch.tensor([row])
            logits = bonus_training.select_token_logits(model.eval()(batch), batch, token_pos, 50256, average_embeddings)
            out.append(torch.softmax(logits, dim=-1)[0])
    return torch.stack(out)


@pytest.mark.parametrize("max_length, token_pos, average, causal", [
    (24, "last", False, True), (None, "last", False, True), (24, "flexible", False, True),
    (24, "first", False, True), (24, "last", True, True), (24, "first", False, False),
    (24, "flexible", False, False)])
def test_class_probabilities_equal_the_whole_model_for_every_setting(max_length, token_pos, average, causal):
    from beyond import experiments

    model = tiny_classifier(seed=4)
    if not causal:  # without the causal mask every token sees the padding: nothing may be cut
        experiments.setup_classifier(model, 2, disable_causal_mask=True)
    texts = ["win cash now!!", "see you at 8", "", "URGENT: claim your prize " * 3, "ok", "free entry"] * 2
    rows = [prediction.encode_for_classifier(t, PlainTokenizer(), 1024, max_length) or [50256] for t in texts]
    expected = whole_model_probabilities(rows, model, token_pos, average)
    got = prediction.class_probabilities(texts, model, PlainTokenizer(), "cpu", max_length, batch_size=4,
                                         trainable_token_pos=token_pos, average_embeddings=average)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    from_ids = prediction.class_probabilities(rows, model, trainable_token_pos=token_pos, average_embeddings=average)
    torch.testing.assert_close(from_ids, expected, atol=1e-6, rtol=0)
    bf16 = prediction.class_probabilities(texts, model, PlainTokenizer(), "cpu", max_length, precision="bf16",
                                          trainable_token_pos=token_pos, average_embeddings=average)
    torch.testing.assert_close(bf16, expected, atol=3e-2, rtol=0)


def test_every_caller_gets_its_p_spam_from_class_probabilities(tmp_path, tokenizer):
    from beyond import attacks, look_inside

    model = tiny_classifier(seed=5)
    texts = ["You won a prize, call now", "lunch at noon?", "free entry!!"]
    rows = [prediction.encode_for_classifier(t, tokenizer, 1024, 12) for t in texts]
    expected = whole_model_probabilities(rows, model)[:, 1]
    assert attacks.gpt2_score_fn(model, tokenizer, "cpu", 12)(texts) == pytest.approx(expected.tolist(), abs=1e-6)
    assert look_inside.spam_probabilities(model, rows) == pytest.approx(expected.tolist(), abs=1e-6)
    assert look_inside.explain(texts[0], model, tokenizer, max_length=12)["p_spam"] == pytest.approx(
        float(expected[0]), abs=1e-6)
    _save_tiny(tmp_path / "classifier.pt", model)
    saved = prediction.predict_from_checkpoint(tmp_path, texts, tokenizer=tokenizer)
    assert [p if label == "spam" else 1 - p for label, p in saved] == pytest.approx(expected.tolist(), abs=1e-6)


def test_the_trainer_imports_neither_prediction_nor_saved_classifiers():
    import subprocess

    code = ("import sys, beyond.fast_trainer, beyond.metrics, beyond.checkpoints\n"
            "print(sorted(m for m in sys.modules if m in ('beyond.prediction', 'beyond.look_inside', 'beyond.cli')))")
    trainer = subprocess.run([sys.executable, "-c", code.replace(", beyond.checkpoints", "")], check=True,
                             capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert trainer.stdout.strip() == "[]"
    files = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                           cwd=Path(__file__).parents[1], timeout=120)
    assert files.stdout.strip() == "[]"  # saved classifiers sit below prediction, which uses them


@pytest.mark.parametrize("token_pos", ["last", "flexible", "first"])
def test_class_probabilities_run_the_last_block_at_the_read_position_only_with_the_full_models_numbers(token_pos):
    """The batched shortcut (the last block at the read token only) gives what the whole model gives."""
    model = tiny_classifier(seed=3)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 1000, (n,), generator=g).tolist() + [50256] * (12 - n) for n in (3, 7, 12, 7, 1)]
    full_calls = []
    hook = model.trf_blocks[-1].register_forward_hook(lambda *_: full_calls.append(1))
    try:
        got = prediction.class_probabilities(rows, model, trainable_token_pos=token_pos)
    finally:
        hook.remove()
    assert full_calls == []  # the last block never ran over every position
    model.eval()
    with torch.no_grad():
        expected = torch.cat([torch.softmax(bonus_training.select_token_logits(
            model(torch.tensor([row])), torch.tensor([row]), token_pos, 50256), dim=-1) for row in rows])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
