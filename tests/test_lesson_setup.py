"""lesson_setup: what notebook 8 may reuse from notebook 6's saved classifier."""

from types import SimpleNamespace

import torch

import gpt_model
from beyond import lesson_setup
from beyond.checkpoints import save_classifier
from beyond.model_setup import build_model_with_base


def test_notebook_8_reads_notebook_6s_accuracy_only_for_exactly_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORIAL_TEST_MODE", "1")
    model, cfg, base = build_model_with_base(test_mode=True, seed=123)
    model.out_head = torch.nn.Linear(cfg["emb_dim"], 2)
    setup = SimpleNamespace(classifier_path=tmp_path / "classifier.pt", config=cfg, max_length=120,
                            weights="tiny random GPT (test mode)")
    assert lesson_setup.notebook_6_test_accuracy(setup, epochs=1) is None  # nothing saved yet
    save_classifier(setup.classifier_path, model, cfg, max_length=120, base=base,
                    extra={"test_accuracy": 0.75, "weights": setup.weights, "epochs": 1})
    assert lesson_setup.notebook_6_test_accuracy(setup, epochs=1) == 0.75
    assert lesson_setup.notebook_6_test_accuracy(setup, epochs=5) is None
    for changed in ({"max_length": 1024}, {"weights": "other"}, {"config": gpt_model.get_model_config("gpt2-small (124M)")}):
        assert lesson_setup.notebook_6_test_accuracy(SimpleNamespace(**{**vars(setup), **changed}), epochs=1) is None
