"""checkpoints.py: a saved classifier comes back as it was built; small files by default, full on request."""

import json

import pytest
import torch

import checkpoints
import cli
import experiments
import gpt_model
import model_setup
import spam_dataset


def tiny_base(seed=123):
    """The test-mode model as build_model gives it (so its base can be rebuilt from the seed)."""
    return model_setup.build_model(test_mode=True, seed=seed)[0]


def _perturb(model, only_trainable=True):
    """Stand-in for training: change every trainable weight a little."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad or not only_trainable:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def test_python_saved_lora_without_causal_mask_reloads_as_built(tmp_path):
    torch.manual_seed(0)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    experiments.setup_classifier(model, 2, "lora", lora_rank=4, lora_alpha=8, disable_causal_mask=True)
    _perturb(model)
    checkpoints.save_classifier(tmp_path / "c.pt", model, gpt_model.TINY_CONFIG)  # every setting left default
    loaded, _ = checkpoints.load_classifier(tmp_path / "c.pt")
    assert experiments.classifier_switches(loaded) == experiments.classifier_switches(model)
    ids = torch.randint(0, 50257, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model.eval()(ids))


def test_a_file_that_does_not_fit_names_the_missing_and_unexpected_keys(tmp_path):
    model = experiments.setup_classifier(gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG)), 2)
    path = tmp_path / "c.pt"
    checkpoints.save_classifier(path, model, gpt_model.TINY_CONFIG, full=True)
    raw = torch.load(path, weights_only=True)
    raw["model_state_dict"]["surprise.weight"] = raw["model_state_dict"].pop("final_norm.scale")
    torch.save(raw, path)
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.load_classifier(path)
    message = str(error.value)
    assert "\n" not in message and "final_norm.scale" in message and "surprise.weight" in message


def test_small_checkpoint_keeps_only_what_training_changed(tmp_path):
    model = _perturb(experiments.setup_classifier(tiny_base(), 2, "last_block"))
    small, full = tmp_path / "small.pt", tmp_path / "full.pt"
    checkpoints.save_classifier(small, model, gpt_model.TINY_CONFIG)
    checkpoints.save_classifier(full, model, gpt_model.TINY_CONFIG, full=True)
    saved = torch.load(small, weights_only=True)
    assert set(saved["model_state_dict"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert saved["base"]["kind"] == "random" and saved["base"]["seed"] == 123
    assert torch.load(full, weights_only=True)["base"] is None
    assert small.stat().st_size * 10 < full.stat().st_size
    ids = torch.randint(0, 50257, (2, 9))
    with torch.no_grad():
        expected = model.eval()(ids)
        for path in (small, full):
            assert torch.equal(checkpoints.load_classifier(path)[0](ids), expected)


def test_small_checkpoint_refuses_other_base_weights(tmp_path):
    model = _perturb(experiments.setup_classifier(tiny_base(), 2))
    path = tmp_path / "c.pt"
    checkpoints.save_classifier(path, model, gpt_model.TINY_CONFIG)
    raw = torch.load(path, weights_only=True)
    raw["base"]["seed"] = 7  # the recorded base no longer rebuilds the weights the classifier was trained on
    torch.save(raw, path)
    with pytest.raises(checkpoints.CheckpointError, match="other base weights") as error:
        checkpoints.load_classifier(path)
    assert "\n" not in str(error.value)
    # and loading into a model the caller built checks its base weights the same way
    with pytest.raises(checkpoints.CheckpointError, match="other base weights"):
        checkpoints.load_classifier(tmp_path / "c.pt", model=experiments.setup_classifier(tiny_base(seed=5), 2))


def test_cli_saves_small_checkpoints_unless_full_is_asked_for(tmp_path):
    data = tmp_path / "sms.csv"
    spam_dataset.make_synthetic_spam_data(n_per_class=20).to_csv(data, index=False)
    flags = ["--test-mode", "--data", str(data), "--data-dir", str(tmp_path / "d"), "--num-epochs", "1",
             "--batch-size", "4", "--eval-iter", "1"]
    assert cli.main([*flags, "--output-dir", str(tmp_path / "small")]) == 0
    assert cli.main([*flags, "--output-dir", str(tmp_path / "full"), "--full-checkpoint"]) == 0
    small = torch.load(tmp_path / "small" / "classifier.pt", weights_only=True)
    full = torch.load(tmp_path / "full" / "classifier.pt", weights_only=True)
    assert "tok_emb.weight" in full["model_state_dict"] and "tok_emb.weight" not in small["model_state_dict"]
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["settings"]["full_checkpoint"]
    ids = torch.randint(0, 50257, (2, 9))
    with torch.no_grad():
        a = checkpoints.load_classifier(tmp_path / "small")[0](ids)
        b = checkpoints.load_classifier(tmp_path / "full")[0](ids)
    assert torch.equal(a, b)


# --- issue 15: the chapter's own files ---

def _chapter_classifier(seed=3):
    """A tiny chapter-shaped classifier as the book builds it: GPTModel, new 2-class head, a little training."""
    torch.manual_seed(seed)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], 2)
    return _perturb(model, only_trainable=False).eval()


@pytest.mark.parametrize("with_mask", [False, True])
def test_the_chapters_plain_state_dict_predicts_like_the_model_that_saved_it(tmp_path, with_mask):
    import gpt_download
    import prediction
    import train_classifier as tc

    model = _chapter_classifier()
    state = model.state_dict()
    if with_mask:  # the chapter's MultiHeadAttention keeps its causal mask as a buffer
        mask = torch.triu(torch.ones(1024, 1024), diagonal=1)
        state = {**state, **{f"trf_blocks.{i}.att.mask": mask for i in range(2)}}
    path = tmp_path / "review_classifier.pth"
    torch.save(state, path)  # the chapter's torch.save(model.state_dict(), "review_classifier.pth")
    tokenizer = gpt_download.get_gpt2_tokenizer()
    texts = ["You are a winner you have been specially selected to receive $1000 cash", "Hey, dinner at 7?",
             "Free entry: text WIN to 80086 now", "ok"]
    expected = [tc.classify_review(t, model, tokenizer, "cpu", max_length=120) for t in texts]
    results = prediction.predict_from_checkpoint(path, texts, tokenizer=tokenizer)
    assert [label for label, _ in results] == expected
    _, info = checkpoints.load_classifier(path)
    assert info["label_names"] == ["not spam", "spam"] and info["max_length"] == 120
    assert info["config"] == {**gpt_model.TINY_CONFIG, "drop_rate": 0.0}
    renamed = prediction.predict_from_checkpoint(path, texts, tokenizer=tokenizer, label_names=["ham", "spam"],
                                                 max_length=30)
    assert {label for label, _ in renamed} <= {"ham", "spam"}


def test_a_gpt2_small_shaped_state_dict_is_recognised(tmp_path):
    cfg = {**gpt_model.get_model_config("124M"), "n_layers": 1}  # GPT-2 small's width, one block (small file)
    model = gpt_model.GPTModel(cfg)
    model.out_head = torch.nn.Linear(768, 2)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("tok_emb")}
    state["tok_emb.weight"] = torch.zeros(50257, 768)
    torch.save(state, tmp_path / "c.pth")
    _, info = checkpoints.load_classifier(tmp_path / "c.pth")
    assert info["config"]["n_heads"] == 12 and info["config"]["qkv_bias"] and info["num_classes"] == 2


@pytest.mark.parametrize("state", [
    {"weight": torch.zeros(3, 3)},  # not a GPT at all
    {"tok_emb.weight": torch.zeros(10, 100), "pos_emb.weight": torch.zeros(8, 100),
     "out_head.weight": torch.zeros(2, 100)},  # a GPT of no GPT-2 width
])
def test_a_state_dict_that_matches_no_gpt2_shape_is_one_line(tmp_path, state, capsys):
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(checkpoints.CheckpointError, match="no GPT-2") as error:
        checkpoints.load_classifier(tmp_path / "x.pth")
    assert "\n" not in str(error.value) and "found" in str(error.value)
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "x.pth"), "hello"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_predict_command_reads_the_chapters_file_with_labels_and_length(tmp_path, capsys):
    torch.save(_chapter_classifier().state_dict(), tmp_path / "review_classifier.pth")
    assert cli.main(["predict", "--checkpoint", str(tmp_path / "review_classifier.pth"), "--labels", "ham",
                     "spam", "--max-length", "40", "--", "You won a prize"]) == 0
    label, probability, message = capsys.readouterr().out.strip().split("\t")
    assert label in ("ham", "spam") and 0.5 <= float(probability) <= 1 and message == "You won a prize"
