"""Saved classifiers: round trips give identical logits; wrong, truncated or foreign files give one clear error."""

import os

import pytest
import torch

import checkpoints
import gpt_model
import train_classifier as tc

from tiny import tiny_model


def trained_tiny(num_classes=2, seed=1):
    model = tc.replace_head_and_freeze(tiny_model(seed), num_classes=num_classes)
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
    target = tc.replace_head_and_freeze(tiny_model(7), num_classes=2)
    same, _ = checkpoints.load_classifier(tmp_path, model=target, num_classes=2, model_size="gpt2-small (124M)")
    assert same is target
    with torch.no_grad():
        assert torch.equal(model(x), target(x))


def test_load_into_a_different_model_names_the_setting(tmp_path):
    path = tmp_path / "classifier.pt"
    checkpoints.save_classifier(path, trained_tiny(), gpt_model.TINY_CONFIG, model_size="124M")
    other = tc.replace_head_and_freeze(tiny_model(emb_dim=16), num_classes=2)
    with pytest.raises(ValueError, match=r"emb_dim=32 .* emb_dim=16"):
        checkpoints.load_classifier(path, model=other)
    deeper = tc.replace_head_and_freeze(tiny_model(n_layers=3), num_classes=2)
    with pytest.raises(ValueError, match="n_layers"):
        checkpoints.load_classifier(path, model=deeper)
    three = tc.replace_head_and_freeze(tiny_model(), num_classes=3)
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
