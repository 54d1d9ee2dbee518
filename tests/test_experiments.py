"""The bonus experiments' switches: LoRA, what trains, the token that classifies, the causal mask (tiny model)."""


import inspect
import json
import sys
from pathlib import Path

import pytest
import torch

import gpt_model
import train_classifier as tc
from beyond import bonus_training, checkpoints, cli, experiments, prediction

from tiny import tiny_classifier, tiny_model


def count_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("trainable_layers", ["last_layer", "last_block", "last_two_blocks", "all"])
def test_replace_head_and_freeze_counts(trainable_layers):
    model = tiny_model(n_layers=3)  # three blocks, so "last_two_blocks" still leaves one frozen
    emb = gpt_model.TINY_CONFIG["emb_dim"]
    model = experiments.replace_head_and_freeze(model, num_classes=2, trainable_layers=trainable_layers)
    assert isinstance(model.out_head, torch.nn.Linear)
    assert model.out_head.weight.shape == (2, emb) and model.out_head.bias.shape == (2,)
    head = emb * 2 + 2
    block = count_params(model.trf_blocks[-1])
    norm = 2 * emb
    expected = {"last_layer": head, "last_block": head + block + norm,
                "last_two_blocks": head + 2 * block + norm, "all": count_params(model)}[trainable_layers]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected
    if trainable_layers != "all":
        assert not model.tok_emb.weight.requires_grad
        assert not any(p.requires_grad for p in model.trf_blocks[0].parameters())


def test_replace_head_and_freeze_rejects_unknown_choice():
    with pytest.raises(ValueError, match="last_block"):
        experiments.replace_head_and_freeze(tiny_model(), trainable_layers="top")


def test_model_output_has_num_classes_columns():
    model = experiments.replace_head_and_freeze(tiny_model(), num_classes=3)
    out = model(torch.tensor([[1, 2, 3, 4]]))
    assert out.shape == (1, 4, 3)


def test_lora_layer_starts_as_identity_update_and_is_scaled_by_alpha_over_rank():
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 4)
    wrapped = experiments.LinearWithLoRA(linear, rank=2, alpha=8, scaling="alpha_over_rank")
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
    assert experiments.lora_settings(model) == {"lora_rank": 4, "lora_alpha": 8.0, "lora_scaling": "alpha"}
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
    assert experiments.lora_settings(loaded) == {"lora_rank": 2, "lora_alpha": 4.0, "lora_scaling": "alpha"}
    ids = torch.randint(0, 50257, (3, 9))
    assert torch.allclose(loaded(ids), model(ids), atol=1e-6)
    # rebuilding from the extras by hand (a learner's own model) gives the same layers
    rebuilt = experiments.rebuild_classifier_switches(tiny_classifier(), info)
    rebuilt.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    assert torch.allclose(rebuilt(ids), model(ids), atol=1e-6)


def test_replace_head_and_freeze_lora_from_python():
    model = experiments.setup_classifier(tiny_classifier(), 3, "lora", lora_rank=2, lora_alpha=2)
    assert model.out_head.out_features == 3 and isinstance(model.out_head, experiments.LinearWithLoRA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # as in the bonus experiments, the new head trains too (and carries LoRA like every Linear)
    assert {n.rsplit(".", 1)[-1] for n in trainable} == {"A", "B", "weight", "bias"}
    assert {n for n in trainable if not n.endswith(("A", "B"))} == {"out_head.linear.weight", "out_head.linear.bias"}


def test_lora_alternative_trains_what_the_bonus_trains_and_computes_the_same_function():
    ids = torch.randint(0, 50257, (2, 7))
    plain = experiments.setup_classifier(tiny_classifier(seed=1), 2, "lora", lora_rank=2, lora_alpha=4)
    merged = experiments.setup_classifier(tiny_classifier(seed=1), 2, "lora_alternative", lora_rank=2, lora_alpha=4)
    wrappers = [m for m in merged.modules() if isinstance(m, experiments.LinearWithLoRA)]
    assert wrappers and all(isinstance(m, experiments.LinearWithLoRAMerged) for m in wrappers)
    # the bonus: every Linear (the new head included) gets A and B; the head's own weight and bias train too
    trainable = {n for n, p in merged.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in plain.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.endswith(("lora.A", "lora.B"))} == {"out_head.linear.weight",
                                                                              "out_head.linear.bias"}
    merged.load_state_dict(plain.state_dict())  # the same state_dict keys: one file format for both
    with torch.no_grad():
        for m in (*plain.modules(), *merged.modules()):
            if isinstance(m, experiments.LoRALayer):
                torch.manual_seed(0)
                m.B.normal_(std=0.1)  # a trained update, so the merge is exercised
    assert torch.allclose(merged(ids), plain(ids), rtol=1e-4, atol=1e-4)  # equal up to rounding
    assert experiments.lora_settings(merged) == {"lora_rank": 2, "lora_alpha": 4.0, "lora_scaling": "alpha",
                                                 "lora_merged": True}
    rebuilt = experiments.rebuild_classifier_switches(tiny_classifier(), {"switches": experiments.classifier_switches(
        merged)})
    assert isinstance(rebuilt.trf_blocks[0].att.W_query, experiments.LinearWithLoRAMerged)
    assert "lora_alternative" in experiments.TRAINABLE_LAYERS


def test_average_embeddings_averages_every_position_padding_included_as_row_19():
    pad = 50256
    model = tiny_classifier(seed=4)
    ids = torch.tensor([[11, 12, pad, pad], [13, 14, 15, 16]])
    targets = torch.tensor([0, 1])
    logits = model(ids)
    every_position = torch.nn.functional.cross_entropy(logits.mean(dim=1), targets).item()  # the bonus script's
    real_tokens = torch.nn.functional.cross_entropy(torch.stack([logits[0, :2].mean(0), logits[1].mean(0)]),
                                                    targets).item()
    assert abs(every_position - real_tokens) > 1e-4  # the padding moves the mean: the two options differ here
    for average in (True, "all_positions"):
        loss = bonus_training.calc_loss_batch(ids, targets, model, "cpu", average_embeddings=average)
        assert loss.item() == pytest.approx(every_position, abs=1e-6)
    loss = bonus_training.calc_loss_batch(ids, targets, model, "cpu", average_embeddings="real_tokens")
    assert loss.item() == pytest.approx(real_tokens, abs=1e-6)
    with pytest.raises(ValueError, match="real_tokens"):
        bonus_training.calc_loss_batch(ids, targets, model, "cpu", average_embeddings="padding")


def test_flexible_position_wins_over_averaging_as_in_the_bonus_script():
    logits = torch.arange(2 * 4 * 2, dtype=torch.float32).view(2, 4, 2)
    ids = torch.tensor([[5, 6, 50256, 50256], [5, 6, 7, 8]])
    last_real = torch.stack([logits[0, 1], logits[1, 3]])
    assert torch.equal(bonus_training.select_token_logits(logits, ids, "flexible", 50256), last_real)
    for average in (True, "real_tokens"):  # the bonus script checks "flexible" before average_embeddings
        assert torch.equal(bonus_training.select_token_logits(logits, ids, "flexible", 50256, average), last_real)
        for position in ("first", "last"):  # ... and averages instead of reading "first" or "last"
            picked = bonus_training.select_token_logits(logits, ids, position, 50256, average)
            assert not torch.equal(picked, bonus_training.select_token_logits(logits, ids, position, 50256))
    assert torch.equal(bonus_training.select_token_logits(logits, ids, "last", 50256, True), logits.mean(dim=1))
    with pytest.raises(ValueError, match="flexible"):
        bonus_training.select_token_logits(logits, ids, "middle")
    with pytest.raises(ValueError, match="flexible"):
        bonus_training.select_token_logits(logits, ids, "middle", average_embeddings=True)


def test_the_bonus_tables_row_19_averages_every_position():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bonus_table

    flags = next(row[6] for row in bonus_table.ROWS if row[0] == 19)
    assert cli.parse_args(flags).average_embeddings == "all_positions"
    args = cli.parse_args(["--average-embeddings", "real_tokens"])
    assert args.average_embeddings == "real_tokens"
    assert cli.parse_args([]).average_embeddings is False


def test_the_fast_trainer_steps_aside_for_averaging_it_does_not_implement():
    from beyond import fast_trainer

    model = experiments.replace_head_and_freeze(tiny_classifier(), 2, "last_block")
    assert fast_trainer.why_not_fast(model) == ""
    for average in (True, "all_positions", "real_tokens"):
        assert "average_embeddings" in fast_trainer.why_not_fast(model, average_embeddings=average)


def test_read_positions_is_the_position_select_token_logits_reads():
    ids = torch.tensor([[5, 6, 50256, 50256], [5, 6, 7, 8], [50256, 50256, 50256, 50256]])
    logits = torch.randn(3, 4, 2)
    for position, expected in (("last", [3, 3, 3]), ("first", [0, 0, 0]), ("flexible", [1, 3, 0])):
        assert bonus_training.read_positions(ids, position).tolist() == expected
        assert torch.equal(bonus_training.select_token_logits(logits, ids, position),
                           logits[torch.arange(3), torch.tensor(expected)])


def test_saved_average_embeddings_reads_old_files_as_the_real_token_mean():
    read = bonus_training.saved_average_embeddings
    assert read({"average_embeddings": True}) == "real_tokens"  # files from before: True was the real-token mean
    assert read({"average_embeddings": "all_positions"}) == "all_positions"
    assert read({"average_embeddings": "real_tokens"}) == "real_tokens"
    assert read({}) is False and read(None) is False and read({"average_embeddings": False}) is False


def test_the_switch_aware_functions_equal_the_chapters_on_the_chapters_settings(capsys):
    torch.manual_seed(3)
    ids, labels = torch.randint(0, 50000, (12, 6)), torch.randint(0, 2, (12,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, labels), batch_size=4)
    model = tiny_classifier(seed=2)
    assert torch.equal(bonus_training.calc_loss_batch(ids, labels, model, "cpu"),
                       tc.calc_loss_batch(ids, labels, model, "cpu"))
    assert bonus_training.calc_loss_loader(loader, model, "cpu", 2) == tc.calc_loss_loader(loader, model, "cpu", 2)
    assert bonus_training.calc_accuracy_loader(loader, model, "cpu") == tc.calc_accuracy_loader(loader, model, "cpu")
    runs = []
    for module in (tc, bonus_training):
        model = experiments.replace_head_and_freeze(tiny_classifier(seed=6), 2, "last_block")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        history = module.train_classifier_simple(model, loader, loader, optimizer, "cpu", 2, eval_freq=2, eval_iter=2)
        runs.append((history, [p.detach().clone() for p in model.parameters()], capsys.readouterr().out))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]  # the same histories and printout
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))  # the same weights


def test_the_switch_aware_functions_keep_the_chapters_positional_parameters():
    for name in ("calc_accuracy_loader", "calc_loss_batch", "calc_loss_loader", "evaluate_model",
                 "train_classifier_simple"):
        book = list(inspect.signature(getattr(tc, name)).parameters)
        assert list(inspect.signature(getattr(bonus_training, name)).parameters)[:len(book)] == book, name


def test_ignore_index_in_the_loss():
    pad = 50256
    model = tiny_classifier(seed=4)
    ids = torch.tensor([[11, 12, pad, pad], [13, 14, 15, 16]])
    targets = torch.tensor([0, 1])
    logits = model(ids)
    # ignore_index drops the examples whose target equals it (a class id here; the bonus script's 50256: none)
    only_second = torch.nn.functional.cross_entropy(logits[1:, -1], targets[1:]).item()
    loss = bonus_training.calc_loss_batch(ids, targets, model, "cpu", ignore_index=0)
    assert loss.item() == pytest.approx(only_second, abs=1e-6)
    assert bonus_training.calc_loss_batch(ids, targets, model, "cpu", ignore_index=50256).item() == pytest.approx(
        tc.calc_loss_batch(ids, targets, model, "cpu").item())


def test_accumulating_batches_of_one_equals_one_batch_of_four():
    torch.manual_seed(5)
    ids, labels = torch.randint(0, 50000, (8, 6)), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    data = torch.utils.data.TensorDataset(ids, labels)
    results = []
    for batch_size, steps in ((4, 1), (1, 4)):
        model = experiments.replace_head_and_freeze(tiny_classifier(seed=6), 2, "last_block")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        torch.manual_seed(7)  # the same shuffle for both loaders
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
        bonus_training.train_classifier_simple(model, loader, loader, optimizer, "cpu", 1, eval_freq=100,
                                               eval_iter=1, accumulation_steps=steps)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(results[0], results[1], atol=1e-5)
    assert not torch.allclose(results[0], torch.cat([p.detach().flatten() for p in experiments.replace_head_and_freeze(
        tiny_classifier(seed=6), 2, "last_block").parameters() if p.requires_grad]))  # it did train


def test_disable_causal_mask_switches_every_attention_layer():
    model = tiny_classifier()
    ids = torch.randint(0, 50000, (1, 5))
    first = model(ids)[0, 0]
    experiments.set_causal_mask(model, False)
    assert all(not b.att.causal for b in model.trf_blocks)
    assert not torch.allclose(model(ids)[0, 0], first)  # the first token now sees the others


def _cli(tmp_path, name, *flags, rows=None, data=None):
    """Run main() in test mode on a small synthetic CSV; returns (exit code, metrics or None, output folder)."""
    from beyond.synthetic_data import make_synthetic_spam_data

    if data is None:
        data = tmp_path / "sms.csv"
        if not data.exists():
            (rows if rows is not None else make_synthetic_spam_data(n_per_class=30)).to_csv(
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
    assert "trf_blocks.0.att.W_query.linear.weight" not in weights  # unchanged: the small checkpoint leaves it out
    assert weights["trf_blocks.0.att.W_query.lora.B"].abs().sum() > 0  # the update trained
    assert state["extra"]["lora_rank"] == 2
    model, _ = checkpoints.load_classifier(out)
    assert torch.equal(model.trf_blocks[0].att.W_query.linear.weight, initial["trf_blocks.0.att.W_query.weight"])
    assert experiments.lora_settings(model) == {"lora_rank": 2, "lora_alpha": 4.0, "lora_scaling": "alpha"}
    assert len(prediction.predict_from_checkpoint(out, ["win a prize", "lunch?"])) == 2


def test_cli_lora_alternative_and_the_real_token_mean_train_and_reload(tmp_path):
    code, metrics, out = _cli(tmp_path, "loralt", "--trainable_layers", "lora_alternative", "--lora_rank", "2",
                              "--lora_alpha", "4", "--average_embeddings", "real_tokens")
    assert code == 0 and metrics["settings"]["trainer"] == "simple"
    model, info = checkpoints.load_classifier(out)
    assert isinstance(model.trf_blocks[0].att.W_query, experiments.LinearWithLoRAMerged)
    assert bonus_training.saved_average_embeddings(info["extra"]) == "real_tokens"
    assert metrics["settings"]["average_embeddings"] == "real_tokens"
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


# --- issue 10: LoRA as the bonus experiments run it; switches read off the model ---

def test_lora_scales_by_alpha_as_the_bonus_and_offers_alpha_over_rank():
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    for scaling, factor in (("alpha", 8.0), ("alpha_over_rank", 4.0)):
        linear = torch.nn.Linear(6, 4)
        wrapped = experiments.LinearWithLoRA(linear, rank=2, alpha=8, scaling=scaling)
        with torch.no_grad():
            wrapped.lora.B.fill_(1.0)
        expected = linear(x) + factor * (x @ wrapped.lora.A @ wrapped.lora.B)
        assert torch.allclose(wrapped(x), expected, atol=1e-5), scaling
    default = experiments.LinearWithLoRA(torch.nn.Linear(6, 4), rank=2, alpha=8)
    assert default.lora.scaling == "alpha"  # the bonus experiments' (and appendix E's) scaling by default
    with pytest.raises(ValueError, match="alpha_over_rank"):
        experiments.LoRALayer(6, 4, 2, 8, scaling="rank")


def test_lora_classifier_trains_and_wraps_its_new_head_as_the_bonus():
    model = experiments.setup_classifier(tiny_model(), 2, "lora", lora_rank=2, lora_alpha=2)
    assert isinstance(model.out_head, experiments.LinearWithLoRA)
    assert model.out_head.linear.weight.requires_grad and model.out_head.linear.bias.requires_grad
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith("out_head.") and ".lora." not in n for n in frozen)
    scaled = experiments.setup_classifier(tiny_model(), 2, "lora", lora_rank=2, lora_alpha=2,
                                          lora_scaling="alpha_over_rank")
    assert experiments.lora_settings(scaled)["lora_scaling"] == "alpha_over_rank"


def test_help_says_how_lora_is_scaled(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--lora-scaling" in text and "alpha_over_rank" in text
    args = cli.parse_args(["--trainable-layers", "lora"])
    assert args.lora_scaling == "alpha"


def test_classifier_switches_are_read_off_the_model():
    model = experiments.setup_classifier(tiny_model(), 2, "lora", lora_rank=4, lora_alpha=8,
                                         disable_causal_mask=True)
    assert experiments.classifier_switches(model) == {
        "lora": {"lora_rank": 4, "lora_alpha": 8.0, "lora_scaling": "alpha"}, "causal": False}
    rebuilt = experiments.rebuild_classifier_switches(tiny_model(), {"switches": experiments.classifier_switches(model)})
    assert experiments.classifier_switches(rebuilt) == experiments.classifier_switches(model)


class _LetterTokenizer:
    def encode(self, text, **kwargs):
        return [ord(c) for c in text]


def test_batched_answers_without_the_causal_mask_are_classify_reviews():
    from beyond import prediction

    model = experiments.set_causal_mask(tiny_classifier(seed=8), False)  # not the fast path: the whole model
    texts = ["win cash now", "see you at 8", "free entry!!", "ok", "hi mum, call me"]
    padded = torch.tensor([_LetterTokenizer().encode(t) + [50256] * (20 - len(t)) for t in texts])
    logits = model(padded)[:, -1]
    with torch.no_grad():  # the threshold at the median message, so both answers occur
        model.out_head.bias[1] -= (logits[:, 1] - logits[:, 0]).median() - 1e-4
    expected = [tc.classify_review(t, model, _LetterTokenizer(), "cpu", max_length=20) for t in texts]
    assert {"spam", "not spam"} == set(expected)
    probabilities = prediction.class_probabilities(texts, model, _LetterTokenizer(), "cpu", 20, batch_size=2)
    assert ["spam" if p[1] > p[0] else "not spam" for p in probabilities.tolist()] == expected
