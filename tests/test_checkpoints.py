"""Saved classifiers: round trips give identical logits; wrong, truncated or foreign files give one clear error."""


import json
import os
from pathlib import Path

import pytest
import torch

import gpt_model
import train_classifier as tc
from beyond import checkpoints, cli, experiments, model_setup
from beyond.synthetic_data import make_synthetic_spam_data

from tiny import tiny_model


def trained_tiny(num_classes=2, seed=1):
    model = experiments.replace_head_and_freeze(tiny_model(seed), num_classes=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = trained_tiny()
    path = tmp_path / "classifier.pt"
    checkpoints.save_classifier(path, model, gpt_model.TINY_CONFIG, ["ham", "spam"], 120, {"note": "x"}, model_size="124M")
    assert os.listdir(tmp_path) == ["classifier.pt"]
    raw = torch.load(path, weights_only=True)  # a plain dict: no pickled code
    assert raw["format"] == checkpoints.CHECKPOINT_FORMAT and raw["num_classes"] == 2
    loaded, info = checkpoints.load_classifier(path)
    assert info["label_names"] == ["ham", "spam"] and info["max_length"] == 120
    assert info["config"] == gpt_model.TINY_CONFIG and info["model_size"] == "124M"
    assert info["trainable_layers"] == "last_block" and info["extra"] == {"note": "x"}
    x = torch.tensor([[15496, 11, 995, 50256, 50256]])
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # loading into a given model of the same shape, and from the folder
    target = experiments.replace_head_and_freeze(tiny_model(7), num_classes=2)
    same, _ = checkpoints.load_classifier(tmp_path, model=target, num_classes=2, model_size="gpt2-small (124M)")
    assert same is target
    with torch.no_grad():
        assert torch.equal(model(x), target(x))


def test_load_into_a_different_model_names_the_setting(tmp_path):
    path = tmp_path / "classifier.pt"
    checkpoints.save_classifier(path, trained_tiny(), gpt_model.TINY_CONFIG, model_size="124M")
    other = experiments.replace_head_and_freeze(tiny_model(emb_dim=16), num_classes=2)
    with pytest.raises(ValueError, match=r"emb_dim=32 .* emb_dim=16"):
        checkpoints.load_classifier(path, model=other)
    deeper = experiments.replace_head_and_freeze(tiny_model(n_layers=3), num_classes=2)
    with pytest.raises(ValueError, match="n_layers"):
        checkpoints.load_classifier(path, model=deeper)
    three = experiments.replace_head_and_freeze(tiny_model(), num_classes=3)
    with pytest.raises(ValueError, match="num_classes=2 .* num_classes=3"):
        checkpoints.load_classifier(path, model=three)
    with pytest.raises(ValueError, match="num_classes"):
        checkpoints.load_classifier(path, num_classes=3)
    with pytest.raises(ValueError, match="model_size='124M'"):
        checkpoints.load_classifier(path, model_size="gpt2-medium (355M)")
    with pytest.raises(ValueError, match="n_heads"):
        checkpoints.load_classifier(path, cfg={**gpt_model.TINY_CONFIG, "n_heads": 4})


def test_truncated_foreign_and_missing_files_give_clear_errors(tmp_path):
    path = tmp_path / "classifier.pt"
    checkpoints.save_classifier(path, trained_tiny(), gpt_model.TINY_CONFIG)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, corrupt"):
        checkpoints.load_classifier(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="truncated, corrupt"):
        checkpoints.load_classifier(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a classifier saved by save_classifier"):
        checkpoints.load_classifier(foreign)
    with pytest.raises(FileNotFoundError, match="not found"):
        checkpoints.load_classifier(tmp_path / "missing.pt")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "classifier.pt"
    checkpoints.save_classifier(path, trained_tiny(), gpt_model.TINY_CONFIG)
    before = path.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_classifier(path, trained_tiny(seed=2), gpt_model.TINY_CONFIG)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["classifier.pt"]


def test_save_rejects_wrong_number_of_label_names(tmp_path):
    with pytest.raises(ValueError, match="label names"):
        checkpoints.save_classifier(tmp_path / "c.pt", trained_tiny(num_classes=3), gpt_model.TINY_CONFIG, ["a", "b"])


# --- issue 10: a saved classifier comes back as it was built; small files by default, full on request ---

def tiny_base(seed=123):
    """(model, base record): the test-mode model as build_model_with_base gives it (rebuilt from the seed)."""
    model, _cfg, base = model_setup.build_model_with_base(test_mode=True, seed=seed)
    return model, base


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
    base_model, base = tiny_base()
    model = _perturb(experiments.setup_classifier(base_model, 2, "last_block"))
    small, full = tmp_path / "small.pt", tmp_path / "full.pt"
    checkpoints.save_classifier(small, model, gpt_model.TINY_CONFIG, base=base)
    checkpoints.save_classifier(full, model, gpt_model.TINY_CONFIG, base=base, full=True)
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
    base_model, base = tiny_base()
    model = _perturb(experiments.setup_classifier(base_model, 2))
    path = tmp_path / "c.pt"
    checkpoints.save_classifier(path, model, gpt_model.TINY_CONFIG, base=base)
    raw = torch.load(path, weights_only=True)
    raw["base"]["seed"] = 7  # the recorded base no longer rebuilds the weights the classifier was trained on
    torch.save(raw, path)
    with pytest.raises(checkpoints.CheckpointError, match="other base weights") as error:
        checkpoints.load_classifier(path)
    assert "\n" not in str(error.value)
    # and loading into a model the caller built checks its base weights the same way
    with pytest.raises(checkpoints.CheckpointError, match="other base weights"):
        checkpoints.load_classifier(tmp_path / "c.pt", model=experiments.setup_classifier(tiny_base(seed=5)[0], 2))


def test_cli_saves_small_checkpoints_unless_full_is_asked_for(tmp_path):
    data = tmp_path / "sms.csv"
    make_synthetic_spam_data(n_per_class=20).to_csv(data, index=False)
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
    from beyond import prediction
    from beyond.gpt2_tokenizer import get_gpt2_tokenizer

    model = _chapter_classifier()
    state = model.state_dict()
    if with_mask:  # the chapter's MultiHeadAttention keeps its causal mask as a buffer
        mask = torch.triu(torch.ones(1024, 1024), diagonal=1)
        state = {**state, **{f"trf_blocks.{i}.att.mask": mask for i in range(2)}}
    path = tmp_path / "review_classifier.pth"
    torch.save(state, path)  # the chapter's torch.save(model.state_dict(), "review_classifier.pth")
    tokenizer = get_gpt2_tokenizer()
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


def test_the_base_record_is_passed_not_bolted_onto_the_model(tmp_path):
    base_model, _base = tiny_base()
    assert not hasattr(base_model, "base_weights")  # nothing for another module to find on the model
    model = _perturb(experiments.setup_classifier(base_model, 2))
    checkpoints.save_classifier(tmp_path / "no_base.pt", model, gpt_model.TINY_CONFIG)  # no base given: full
    assert torch.load(tmp_path / "no_base.pt", weights_only=True)["base"] is None


def test_a_small_classifier_saved_before_the_base_record_was_passed_still_loads_and_answers_alike():
    # written by `train_classifier.py --test-mode --data synthetic --num-epochs 1 --batch-size 4` at commit 6b3a3d6,
    # when build_model still put the base record on the model; its answers then, to the last printed digit
    path = Path(__file__).parent / "fixtures" / "small_classifier_saved_before_issue_18.pt"
    assert torch.load(path, weights_only=True)["base"]["kind"] == "random"  # a small file: its base is rebuilt
    from beyond import prediction

    answers = prediction.predict_from_checkpoint(path, ["WIN a free prize now", "see you at lunch", ""])
    assert [label for label, _ in answers] == ["ham", "ham", "ham"]
    assert [p for _, p in answers] == pytest.approx([0.5843169093132019, 0.5848007798194885, 0.5781935453414917],
                                                    abs=1e-6)
