"""Issue 6, beyond the chapter: LoRA, metrics, prediction, several processes, the bonus switches (tiny model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpt_model
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
    wrapped = tc.LinearWithLoRA(linear, rank=2, alpha=8)
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
    tc.apply_lora(model, rank=4, alpha=8)
    wrapped = [m for m in model.modules() if isinstance(m, tc.LinearWithLoRA)]
    assert len(wrapped) == n_linear == 2 * 6 + 1  # 4 attention + 2 feed-forward per block, and out_head
    assert isinstance(model.out_head, tc.LinearWithLoRA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora.A", "lora.B")) for n in trainable)
    assert len(trainable) == 2 * n_linear
    assert torch.allclose(model(ids), before)  # unchanged until trained
    assert tc.lora_settings(model) == {"lora_rank": 4, "lora_alpha": 8.0}
    trainable_count, total = tc.count_trainable_parameters(model)
    assert 0 < trainable_count < total / 10
    tc.apply_lora(model, rank=4, alpha=8)  # applying twice must not wrap twice
    assert sum(isinstance(m, tc.LinearWithLoRA) for m in model.modules()) == n_linear

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = tc.calc_loss_batch(ids, torch.tensor([0, 1]), model, "cpu")
    loss.backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.allclose(model(ids), before)


def test_apply_lora_rejects_a_zero_rank():
    with pytest.raises(ValueError, match="rank"):
        tc.apply_lora(tiny_classifier(), rank=0, alpha=1)


def test_lora_classifier_saves_and_loads_with_the_same_logits(tmp_path):
    model = tc.apply_lora(tiny_classifier(), rank=2, alpha=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tc.LoRALayer):
                m.B.normal_()  # a "trained" update, so a load that dropped it would show
    path = tmp_path / "classifier.pt"
    tc.save_classifier(path, model, gpt_model.TINY_CONFIG, label_names=("ham", "spam"), max_length=9,
                       trainable_layers="lora", extra=tc.lora_settings(model))
    loaded, info = tc.load_classifier(tmp_path)
    assert tc.lora_settings(loaded) == {"lora_rank": 2, "lora_alpha": 4.0}
    ids = torch.randint(0, 50257, (3, 9))
    assert torch.allclose(loaded(ids), model(ids), atol=1e-6)
    # rebuilding from the extras by hand (a learner's own model) gives the same layers
    rebuilt = tc.rebuild_classifier_switches(tiny_classifier(), info)
    rebuilt.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    assert torch.allclose(rebuilt(ids), model(ids), atol=1e-6)


# --- metrics ---

def test_metrics_from_a_known_confusion_matrix():
    # 10 ham: 8 right, 2 called spam; 5 spam: 4 right, 1 missed
    m = tc.metrics_from_confusion_matrix([[8, 2], [1, 4]])
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
    m = tc.classification_metrics(model, loader, "cpu", num_classes=3)
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 2, 0], [0, 1, 1]]
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert "precision" not in m  # per class only when there are more than two
    assert m["per_class"][1]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"][2]["recall"] == pytest.approx(1 / 2)
    assert m["macro_f1"] == pytest.approx(sum(p["f1"] for p in m["per_class"]) / 3)
    json.dumps(m)  # goes into metrics.json as is
    assert tc.classification_metrics(model, loader, "cpu", num_classes=3, num_batches=1)["num_examples"] == 3


def test_classification_metrics_reads_the_chosen_token_position():
    pad = 50256
    table = torch.zeros(50257, 2)
    table[5, 1] = 1.0  # token 5 says spam, everything else (pad included) says ham
    model = FixedLogits(table.tolist())
    ids = torch.tensor([[5, pad, pad], [7, 5, pad]])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, torch.tensor([1, 1])), batch_size=2)
    assert tc.classification_metrics(model, loader, "cpu")["recall"] == 0.0  # the last position is a pad
    assert tc.classification_metrics(model, loader, "cpu", trainable_token_pos="first")["confusion_matrix"] == \
        [[0, 0], [1, 1]]
    assert tc.classification_metrics(model, loader, "cpu", trainable_token_pos="flexible")["recall"] == 1.0
    # mean over the real tokens only (pads left out): [0, 1] and ([0, 0] + [0, 1]) / 2
    logits = tc.classification_logits(model, ids, average_embeddings=True)
    assert torch.allclose(logits, torch.tensor([[0.0, 1.0], [0.0, 0.5]]))


def test_confusion_matrix_plot_and_table(tmp_path):
    m = tc.metrics_from_confusion_matrix([[8, 2], [1, 4]])
    fig = tc.plot_confusion_matrix(m["confusion_matrix"], ["ham", "spam"], save_path=tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
    assert [t.get_text() for t in fig.axes[0].texts] == ["8", "2", "1", "4"]
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temp file left behind
    table = tc.format_metrics_table({"validation": m, "test": m}, ["ham", "spam"])
    assert "66.67%" in table and "80.00%" in table and table.count("confusion matrix") == 2


# --- prediction ---

@pytest.fixture(scope="module")
def tokenizer():
    import gpt_download

    return gpt_download.get_gpt2_tokenizer()


def test_predict_agrees_with_classify_review(tokenizer):
    model = tiny_classifier(seed=1)
    texts = ["You are a winner! Claim your prize now", "See you at lunch?", "", "<|endoftext|> hi"]
    results = tc.predict(texts, model, tokenizer, "cpu", max_length=16, label_names=["ham", "spam"])
    assert len(results) == 4
    for text, (label, prob) in zip(texts, results):
        assert 0.5 <= prob <= 1.0
        expected = tc.classify_review(text, model, tokenizer, "cpu", max_length=16) if text else None
        if expected is not None:
            assert label == {"spam": "spam", "not spam": "ham"}[expected]
    # one message alone gives the same answer as inside a batch
    assert tc.predict(texts[1], model, tokenizer, "cpu", max_length=16)[0][1] == pytest.approx(results[1][1])
    unpadded = tc.predict(texts[:2], model, tokenizer, "cpu")
    assert len(unpadded) == 2 and all(0.5 <= p <= 1 for _, p in unpadded)


def _save_tiny(path, model, label_names=("ham", "spam"), **extra):
    tc.save_classifier(path, model, gpt_model.TINY_CONFIG, label_names=label_names, max_length=12,
                       extra=extra or None)


def test_predict_from_checkpoint_folder_or_file(tmp_path, tokenizer):
    model = tiny_classifier(seed=2, num_classes=3)
    _save_tiny(tmp_path / "classifier.pt", model, ("a", "b", "c"), trainable_token_pos="first")
    texts = ["hello there", "free entry in a weekly competition"]
    expected = tc.predict(texts, model, tokenizer, "cpu", max_length=12, label_names=("a", "b", "c"),
                          trainable_token_pos="first")
    for where in (tmp_path, tmp_path / "classifier.pt", str(tmp_path)):
        got = tc.predict_from_checkpoint(where, texts, tokenizer=tokenizer)
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-6)
    with pytest.raises(FileNotFoundError, match="classifier"):
        tc.predict_from_checkpoint(tmp_path / "nowhere", texts)


def test_predict_command_line(tmp_path, capsys):
    model = tiny_classifier(seed=3)
    _save_tiny(tmp_path / "classifier.pt", model)
    messages = tmp_path / "messages.txt"
    messages.write_text("first message\n\nsecond one\n", encoding="utf-8")
    assert tc.predict_main(["--checkpoint", str(tmp_path), "quoted message", "--file", str(messages)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["quoted message", "first message", "second one"]
    assert all(line.split("\t")[0] in ("ham", "spam") and 0.5 <= float(line.split("\t")[1]) <= 1 for line in lines)
    assert tc.predict_main(["--checkpoint", str(tmp_path / "missing"), "hi"]) == 2
    assert "classifier" in capsys.readouterr().err
    assert tc.predict_main(["--checkpoint", str(tmp_path)]) == 2


# --- several processes ---

DDP_SCRIPT = r"""
import json, os, sys
import torch
import gpt_model, train_classifier as tc

rank, world, device = tc.setup_distributed("cpu")
torch.manual_seed(123)
gen = torch.Generator().manual_seed(0)
ids = torch.randint(0, 50257, (24, 10), generator=gen)
labels = torch.randint(0, 2, (24,), generator=gen)
train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, labels), batch_size=4, shuffle=True,
                                    drop_last=True)
val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids[:8], labels[:8]), batch_size=4)
model = tc.replace_head_and_freeze(gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG)), 2, "last_block")
model, train = tc.distribute_training(model, train, device)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
result = tc.train_classifier_simple(model, train, val, optimizer, device, num_epochs=2, eval_freq=2, eval_iter=2)
model = tc.unwrap_model(model)
if tc.is_main_process():
    flat = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
    with open(sys.argv[1], "w") as f:
        json.dump({"val_losses": result[1], "val_accs": result[3], "steps": len(train), "world": world,
                   "params": flat.tolist()}, f)
tc.cleanup_distributed()
"""


def _run(args, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update(env_extra or {})
    return subprocess.run(args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    single = _run([sys.executable, str(script), str(tmp_path / "single.json")], tmp_path)
    assert single.returncode == 0, single.stderr
    double = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   str(script), str(tmp_path / "double.json")], tmp_path)
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "single.json").read_text())
    two = json.loads((tmp_path / "double.json").read_text())
    assert (one["world"], two["world"]) == (1, 2)
    assert (one["steps"], two["steps"]) == (6, 6)  # 24 examples / global batch 4, each process 2 per step
    assert two["val_losses"] == pytest.approx(one["val_losses"], abs=1e-5)
    assert two["val_accs"] == one["val_accs"]
    # the same weights up to float summation order (Adam magnifies it on the few near-zero gradients)
    diff = (torch.tensor(two["params"]) - torch.tensor(one["params"])).abs()
    assert diff.max() < 1e-3 and diff.mean() < 1e-6
    assert len(one["val_losses"]) == 6 and one["val_losses"][0] != one["val_losses"][-1]  # it did train


def test_sharded_sampler_splits_each_global_batch():
    base = list(range(10))
    shards = [list(tc.ShardedSampler(base, 4, r, 2)) for r in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5, 7]]  # the incomplete last global batch (8, 9) is dropped
    assert len(tc.ShardedSampler(base, 4, 0, 2)) == 4
    # rank r's k-th batch of 2 holds exactly the k-th global batch's share
    assert sorted(shards[0][:2] + shards[1][:2]) == [0, 1, 2, 3]


def test_plain_run_is_not_distributed():
    model = tiny_classifier()
    loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2)
    assert tc.distribute_training(model, loader, torch.device("cpu")) == (model, loader)
    assert tc.is_main_process() and tc.unwrap_model(model) is model
