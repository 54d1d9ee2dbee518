"""prediction.py: a saved classifier predicts what it was trained to predict, whatever the bonus switches."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import cli
import gpt_download
import gpt_model
import prediction
import spam_dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bonus_table  # after the sys.path line: the benchmark's ROWS are the switches every file must survive


@pytest.fixture(scope="module")
def tokenizer():
    return gpt_download.get_gpt2_tokenizer()


@pytest.fixture(scope="module")
def sms_csv(tmp_path_factory):
    """A small synthetic data set with messages of different lengths (so padding matters)."""
    path = tmp_path_factory.mktemp("data") / "sms.csv"
    spam_dataset.make_synthetic_spam_data(n_per_class=40).to_csv(path, index=False)
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
