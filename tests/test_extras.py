"""Issue 6, beyond the chapter: LoRA, metrics, prediction, several processes, the bonus switches (tiny model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoints
import cli
import distributed
import experiments
import fast_trainer
import gpt_model
import metrics
import prediction
import train_classifier as tc

REPO = Path(__file__).resolve().parents[1]


def tiny_classifier(seed=123, num_classes=2):
    """The offline tiny GPT with a fresh classification head, as test mode builds it."""
    torch.manual_seed(seed)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], num_classes)
    return model


class FixedLogits(torch.nn.Module):
    """A stand-in model whose class logits at each position are given by the test (first token id picks them)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return self.table[ids]  # [b, t, classes]


# --- LoRA ---

def test_lora_layer_starts_as_identity_update_and_is_scaled_by_alpha_over_rank():
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 4)
    wrapped = experiments.LinearWithLoRA(linear, rank=2, alpha=8)
    x = torch.randn(3, 6)
    assert torch.equal(wrapped(x), linear(x))  # B = 0: fine-tuning starts from the pretrained function
    assert wrapped.lora.A.shape == (6, 2) and wrapped.lora.B.shape == (2, 4)
    assert wrapped.lora.A.abs().sum() > 0
    with torch.no_grad():
        wrapped.lora.B.fill_(1.0)
    expected = linear(x) + 4.0 * (x @ wrapped.lora.A @ wrapped.lora.B)  # alpha / rank = 8 / 2
    assert torch.allclose(wrapped(x), expected, atol=1e-6)
    assert (wrapped.in_features, wrapped.out_features) == (6, 4)


def test_apply_lora_wraps_every_linear_and_trains_only_lora():
    model = tiny_classifier()
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    ids = torch.randint(0, 50257, (2, 7))
    before = model(ids)
    experiments.apply_lora(model, rank=4, alpha=8)
    wrapped = [m for m in model.modules() if isinstance(m, experiments.LinearWithLoRA)]
    assert len(wrapped) == n_linear == 2 * 6 + 1  # 4 attention + 2 feed-forward per block, and out_head
    assert isinstance(model.out_head, experiments.LinearWithLoRA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora.A", "lora.B")) for n in trainable)
    assert len(trainable) == 2 * n_linear
    assert torch.allclose(model(ids), before)  # unchanged until trained
    assert experiments.lora_settings(model) == {"lora_rank": 4, "lora_alpha": 8.0}
    trainable_count, total = experiments.count_trainable_parameters(model)
    assert 0 < trainable_count < total / 10
    experiments.apply_lora(model, rank=4, alpha=8)  # applying twice must not wrap twice
    assert sum(isinstance(m, experiments.LinearWithLoRA) for m in model.modules()) == n_linear

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = tc.calc_loss_batch(ids, torch.tensor([0, 1]), model, "cpu")
    loss.backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.allclose(model(ids), before)


def test_apply_lora_rejects_a_zero_rank():
    with pytest.raises(ValueError, match="rank"):
        experiments.apply_lora(tiny_classifier(), rank=0, alpha=1)


def test_lora_classifier_saves_and_loads_with_the_same_logits(tmp_path):
    model = experiments.apply_lora(tiny_classifier(), rank=2, alpha=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, experiments.LoRALayer):
                m.B.normal_()  # a "trained" update, so a load that dropped it would show
    path = tmp_path / "classifier.pt"
    checkpoints.save_classifier(path, model, gpt_model.TINY_CONFIG, label_names=("ham", "spam"), max_length=9,
                       trainable_layers="lora", extra=experiments.lora_settings(model))
    loaded, info = checkpoints.load_classifier(tmp_path)
    assert experiments.lora_settings(loaded) == {"lora_rank": 2, "lora_alpha": 4.0}
    ids = torch.randint(0, 50257, (3, 9))
    assert torch.allclose(loaded(ids), model(ids), atol=1e-6)
    # rebuilding from the extras by hand (a learner's own model) gives the same layers
    rebuilt = experiments.rebuild_classifier_switches(tiny_classifier(), info)
    rebuilt.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    assert torch.allclose(rebuilt(ids), model(ids), atol=1e-6)


# --- metrics ---

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
    model = FixedLogits(table)
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
    model = FixedLogits(table.tolist())
    ids = torch.tensor([[5, pad, pad], [7, 5, pad]])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, torch.tensor([1, 1])), batch_size=2)
    def matrix(**token):
        return metrics.classification_metrics(*metrics.predict_labels(model, loader, "cpu", **token))

    assert matrix()["recall"] == 0.0  # the last position is a pad
    assert matrix(trainable_token_pos="first")["confusion_matrix"] == \
        [[0, 0], [1, 1]]
    assert matrix(trainable_token_pos="flexible")["recall"] == 1.0
    # mean over the real tokens only (pads left out): [0, 1] and ([0, 0] + [0, 1]) / 2
    logits = tc.select_token_logits(model(ids), ids, average_embeddings=True)
    assert torch.allclose(logits, torch.tensor([[0.0, 1.0], [0.0, 0.5]]))


def test_confusion_matrix_plot_and_table(tmp_path):
    m = metrics.metrics_from_confusion_matrix([[8, 2], [1, 4]])
    fig = metrics.plot_confusion_matrix(m["confusion_matrix"], ["ham", "spam"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["8", "2", "1", "4"]
    table = metrics.format_metrics_table({"validation": m, "test": m}, ["ham", "spam"])
    assert "66.67%" in table and "80.00%" in table and table.count("confusion matrix") == 2


# --- prediction ---

@pytest.fixture(scope="module")
def tokenizer():
    import gpt_download

    return gpt_download.get_gpt2_tokenizer()


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


def test_classify_review_predict_and_classify_reviews_fast_encode_alike():
    model = tiny_classifier(seed=3)
    texts = ["win a prize now", "lunch?", "x" * 40, "<|endoftext|> is text here"]
    for max_length in (8, 16, None):
        one_by_one = [tc.classify_review(t, model, PlainTokenizer(), "cpu", max_length) for t in texts]
        batched = fast_trainer.classify_reviews_fast(texts, model, PlainTokenizer(), "cpu", max_length, batch_size=3)
        predicted = prediction.predict(texts, model, PlainTokenizer(), "cpu", max_length,
                               label_names=("not spam", "spam"))  # no TypeError: the same fallback
        assert batched == one_by_one == [label for label, _ in predicted], max_length
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
    assert cli.predict_main(["--checkpoint", str(tmp_path), "quoted message", "--file", str(messages)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["quoted message", "first message", "second one"]
    assert all(line.split("\t")[0] in ("ham", "spam") and 0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)
    assert cli.predict_main(["--checkpoint", str(tmp_path / "missing"), "hi"]) == 1
    assert "classifier" in capsys.readouterr().err
    assert cli.predict_main(["--checkpoint", str(tmp_path)]) == 1
    assert cli.main(["predict", "--checkpoint", str(tmp_path), "via main"]) == 0  # the CLI's subcommand
    assert capsys.readouterr().out.strip().endswith("\tvia main")


# --- the bonus switches, from Python ---

def test_replace_head_and_freeze_lora_from_python():
    model = experiments.setup_classifier(tiny_classifier(), 3, "lora", lora_rank=2, lora_alpha=2)
    assert model.out_head.out_features == 3 and isinstance(model.out_head, experiments.LinearWithLoRA)
    assert {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad} == {"A", "B"}


def test_average_embeddings_and_ignore_index_in_the_loss():
    pad = 50256
    model = tiny_classifier(seed=4)
    ids = torch.tensor([[11, 12, pad, pad], [13, 14, 15, 16]])
    targets = torch.tensor([0, 1])
    logits = model(ids)
    pooled = torch.stack([logits[0, :2].mean(0), logits[1].mean(0)])
    loss = tc.calc_loss_batch(ids, targets, model, "cpu", average_embeddings=True)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(pooled, targets).item(), abs=1e-6)
    # ignore_index drops the examples whose target equals it (a class id here; the bonus script's 50256: none)
    only_second = torch.nn.functional.cross_entropy(logits[1:, -1], targets[1:]).item()
    assert tc.calc_loss_batch(ids, targets, model, "cpu", ignore_index=0).item() == pytest.approx(only_second, abs=1e-6)
    assert tc.calc_loss_batch(ids, targets, model, "cpu", ignore_index=50256).item() == pytest.approx(
        tc.calc_loss_batch(ids, targets, model, "cpu").item())


def test_accumulating_batches_of_one_equals_one_batch_of_four():
    torch.manual_seed(5)
    ids, labels = torch.randint(0, 50000, (8, 6)), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    data = torch.utils.data.TensorDataset(ids, labels)
    results = []
    for batch_size, steps in ((4, 1), (1, 4)):
        model = tc.replace_head_and_freeze(tiny_classifier(seed=6), 2, "last_block")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        torch.manual_seed(7)  # the same shuffle for both loaders
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
        tc.train_classifier_simple(model, loader, loader, optimizer, "cpu", 1, eval_freq=100, eval_iter=1,
                                   accumulation_steps=steps)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(results[0], results[1], atol=1e-5)
    assert not torch.allclose(results[0], torch.cat([p.detach().flatten() for p in tc.replace_head_and_freeze(
        tiny_classifier(seed=6), 2, "last_block").parameters() if p.requires_grad]))  # it did train


def test_disable_causal_mask_switches_every_attention_layer():
    model = tiny_classifier()
    ids = torch.randint(0, 50000, (1, 5))
    first = model(ids)[0, 0]
    experiments.set_causal_mask(model, False)
    assert all(not b.att.causal for b in model.trf_blocks)
    assert not torch.allclose(model(ids)[0, 0], first)  # the first token now sees the others


# --- the bonus switches on the command line (in-process, tiny model, tiny data) ---

def _cli(tmp_path, name, *flags, rows=None, data=None):
    """Run main() in test mode on a small synthetic CSV; returns (exit code, metrics or None, output folder)."""
    import spam_dataset

    if data is None:
        data = tmp_path / "sms.csv"
        if not data.exists():
            (rows if rows is not None else spam_dataset.make_synthetic_spam_data(n_per_class=30)).to_csv(
                data, index=False)
    out = tmp_path / name
    code = cli.main(["--test-mode", "--data", str(data), "--data-dir", str(tmp_path / f"data_{name}"),
                    "--output-dir", str(out), "--num-epochs", "1", "--batch-size", "4", "--eval-freq", "4",
                    "--eval-iter", "1", *flags])
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None
    return code, metrics, out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return _cli(tmp_path_factory.mktemp("base"), "base")


def test_cli_base_run_writes_metrics_and_confusion_matrix(base_run):
    code, metrics, out = base_run
    assert code == 0 and metrics["settings"]["trainer"] == "fast"
    cm = metrics["classification_metrics"]
    assert set(cm) == {"validation", "test"}
    assert cm["test"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert sum(map(sum, cm["test"]["confusion_matrix"])) == cm["test"]["num_examples"] == 12
    assert (out / "confusion_matrix.png").exists()


def test_cli_ignore_index_for_padding_changes_nothing(tmp_path, base_run):
    code, metrics, _ = _cli(tmp_path, "ignore", "--ignore_index", "50256")  # the bonus script's spelling
    assert code == 0 and metrics["settings"]["ignore_index"] == 50256
    # no label equals 50256, so the losses are the chapter's (as the bonus table's identical rows 1 and 18 show)
    assert metrics["val_losses"] == pytest.approx(base_run[1]["val_losses"], abs=1e-5)
    assert metrics["test_accuracy"] == base_run[1]["test_accuracy"]


def test_cli_lora_trains_only_the_updates_and_predicts(tmp_path, capsys):
    code, metrics, out = _cli(tmp_path, "lora", "--trainable_layers", "lora", "--lora_rank", "2",
                              "--lora_alpha", "4")
    assert code == 0 and metrics["settings"]["trainer"] == "simple"
    assert "LoRA rank 2, alpha 4" in capsys.readouterr().out
    state = torch.load(out / "classifier.pt", weights_only=True)
    torch.manual_seed(123)  # the CLI's seed: the frozen weights must be exactly the initial ones
    initial = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG)).state_dict()
    weights = state["model_state_dict"]
    assert torch.equal(weights["trf_blocks.0.att.W_query.linear.weight"], initial["trf_blocks.0.att.W_query.weight"])
    assert weights["trf_blocks.0.att.W_query.lora.B"].abs().sum() > 0  # the update trained
    assert state["extra"]["lora_rank"] == 2
    model, _ = checkpoints.load_classifier(out)
    assert experiments.lora_settings(model) == {"lora_rank": 2, "lora_alpha": 4.0}
    assert len(prediction.predict_from_checkpoint(out, ["win a prize", "lunch?"])) == 2


@pytest.mark.parametrize("layers", ["last_layer", "last_two_blocks", "all"])
def test_cli_trainable_layers(tmp_path, layers):
    code, metrics, out = _cli(tmp_path, layers, "--trainable-layers", layers)
    assert code == 0 and metrics["settings"]["trainable_layers"] == layers
    weights = torch.load(out / "classifier.pt", weights_only=True)["model_state_dict"]
    torch.manual_seed(123)
    initial = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG)).state_dict()
    changed = {k for k in initial if k in weights and not torch.equal(initial[k], weights[k])}
    assert any(k.startswith("trf_blocks.1.") for k in changed) == (layers != "last_layer")
    assert any(k.startswith("trf_blocks.0.") for k in changed) == (layers != "last_layer")  # 2 blocks: all of them
    assert ("tok_emb.weight" in changed) == (layers == "all")


def test_cli_token_position_average_embeddings_and_causal_mask(tmp_path):
    code, metrics, out = _cli(tmp_path, "avg", "--average-embeddings", "--disable_causal_mask",
                              "--trainable-token-pos", "flexible")
    assert code == 0 and metrics["settings"]["trainer"] == "simple"  # the fast trainer cannot pool
    assert metrics["settings"]["average_embeddings"] and metrics["settings"]["disable_causal_mask"]
    code, metrics, _ = _cli(tmp_path, "nocausal", "--disable-causal-mask")
    assert code == 0 and metrics["settings"]["trainer"] == "simple"  # metrics.json names the loop that ran
    model, info = checkpoints.load_classifier(out)
    assert info["extra"]["average_embeddings"] and not any(b.att.causal for b in model.trf_blocks)
    code, metrics, out = _cli(tmp_path, "first", "--trainable-token-pos", "first")
    assert code == 0 and metrics["settings"]["trainer"] == "fast"
    assert checkpoints.load_classifier(out)[1]["extra"]["trainable_token_pos"] == "first"


def test_cli_context_length_no_padding_and_accumulation(tmp_path, base_run):
    code, metrics, _ = _cli(tmp_path, "ctx", "--context-length", "model_context_length", "--num-epochs", "1")
    assert code == 0 and metrics["settings"]["max_length"] == 1024
    code, metrics, _ = _cli(tmp_path, "ctx20", "--context_length", "20")
    assert code == 0 and metrics["settings"]["max_length"] == 20
    code, metrics, _ = _cli(tmp_path, "nopad", "--no-padding", "--accumulation-steps", "4")
    assert code == 0 and metrics["settings"]["batch_size"] == 1 and metrics["settings"]["trainer"] == "simple"
    assert metrics["examples_seen"] == 42  # every training message once, one at a time
    with pytest.raises(SystemExit) as error:  # argparse: exit 2 with the usage line
        _cli(tmp_path, "bad", "--context-length", "0")
    assert error.value.code == 2
    assert _cli(tmp_path, "long", "--context-length", "5000")[0] == 1
    assert _cli(tmp_path, "acc0", "--accumulation-steps", "0")[0] == 1


def test_cli_own_data_three_classes_and_no_balance(tmp_path):
    import pandas as pd

    texts = [f"{word} message number {i}" for word in ("alpha", "beta", "gamma") for i in range(20)]
    topics = ["work"] * 20 + ["family"] * 20 + ["ads"] * 20
    rows = pd.DataFrame({"message": texts[:50], "topic": topics[:50]})  # 20 work, 20 family, 10 ads
    code, metrics, out = _cli(tmp_path, "own", "--text-column", "message", "--label-column", "topic", rows=rows)
    assert code == 0
    assert len(metrics["classification_metrics"]["test"]["confusion_matrix"]) == 3
    assert checkpoints.load_classifier(out)[1]["label_names"] == ["ads", "family", "work"]
    assert prediction.predict_from_checkpoint(out, ["gamma message"])[0][0] in ("ads", "family", "work")
    counts = [len(pd.read_csv(tmp_path / "data_own" / f"{s}.csv")) for s in ("train", "validation", "test")]
    assert sum(counts) == 30  # balanced: 10 of each
    code, _, _ = _cli(tmp_path, "own_nb", "--text-column", "message", "--label-column", "topic", "--no-balance")
    counts = [len(pd.read_csv(tmp_path / "data_own_nb" / f"{s}.csv")) for s in ("train", "validation", "test")]
    assert code == 0 and sum(counts) == 50


# --- several processes ---

def test_torchrun_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    import spam_dataset

    data = tmp_path / "sms.csv"
    spam_dataset.make_synthetic_spam_data(n_per_class=30).to_csv(data, index=False)
    flags = ["--test-mode", "--data", str(data), "--num-epochs", "2", "--batch-size", "4", "--eval-freq", "4",
             "--eval-iter", "2", "--trainer", "simple", "--lr", "1e-3"]
    assert cli.main([*flags, "--data-dir", str(tmp_path / "d1"), "--output-dir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(REPO / "train_classifier.py"), *flags, "--data-dir", str(tmp_path / "d2"),
                          "--output-dir", str(tmp_path / "two")],
                         check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("Ep 1 (Step 000000)") == 1  # only rank 0 prints
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["examples_seen"] == one["examples_seen"] == 2 * 40  # 10 global batches of 4 per epoch
    assert two["val_losses"] == pytest.approx(one["val_losses"], abs=1e-5)
    assert len(one["val_losses"]) == 5 and one["val_losses"][0] != one["val_losses"][-1]  # it did train
    assert two["classification_metrics"] == one["classification_metrics"]
    assert (two["train_accuracy"], two["test_accuracy"]) == (one["train_accuracy"], one["test_accuracy"])
    # the same weights up to float summation order (Adam magnifies it on the few near-zero gradients)
    w1 = torch.load(tmp_path / "one" / "classifier.pt", weights_only=True)["model_state_dict"]
    w2 = torch.load(tmp_path / "two" / "classifier.pt", weights_only=True)["model_state_dict"]
    diff = torch.cat([(w1[k] - w2[k]).abs().flatten() for k in w1])
    assert diff.max() < 1e-3 and diff.mean() < 1e-7
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_sharded_sampler_splits_each_global_batch():
    base = list(range(10))
    shards = [list(distributed.ShardedSampler(base, 4, r, 2)) for r in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5, 7]]  # the incomplete last global batch (8, 9) is dropped
    assert len(distributed.ShardedSampler(base, 4, 0, 2)) == 4
    # rank r's k-th batch of 2 holds exactly the k-th global batch's share
    assert sorted(shards[0][:2] + shards[1][:2]) == [0, 1, 2, 3]


def test_plain_run_is_not_distributed():
    model = tiny_classifier()
    loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2)
    assert distributed.distribute_training(model, loader, torch.device("cpu")) == (model, loader)
    assert distributed.is_main_process() and distributed.unwrap_model(model) is model
