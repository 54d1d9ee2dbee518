"""--seeds: the run repeated per seed, with mean, standard deviation and range."""

import argparse
import json

import pytest

from beyond import cli
from beyond.seeds import format_summary, parse_seeds, run_over_seeds, summarise


def test_parse_seeds_reads_a_comma_list_and_rejects_bad_ones():
    assert parse_seeds("123,124, 125") == [123, 124, 125]
    for bad in ("123,abc", "", "5,5"):
        with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
            parse_seeds(bad)


def test_summarise_gives_mean_sample_sd_and_range():
    summary = summarise([0.90, 0.92, 0.97])
    assert summary["mean"] == pytest.approx(0.93) and summary["sd"] == pytest.approx(0.036055513, rel=1e-6)
    assert (summary["min"], summary["max"], summary["n"]) == (0.90, 0.97, 3)
    assert format_summary(summary) == "93.00% ± 3.61 (range 90.00-97.00%, 3 seeds)"
    assert summarise([0.5])["sd"] is None


def test_run_over_seeds_gives_each_seed_its_folder_and_aggregates(tmp_path):
    seen = []

    def run_one(args):
        seen.append((args.seed, args.output_dir, args.seeds))
        accuracy = {1: 0.8, 2: 0.9, 3: 1.0}[args.seed]
        return {"train_accuracy": 1.0, "val_accuracy": accuracy / 2, "test_accuracy": accuracy,
                "training_seconds": 1.0}

    args = argparse.Namespace(seed=123, seeds=[1, 2, 3], output_dir=str(tmp_path), lr=1e-3)
    result = run_over_seeds(run_one, args, [1, 2, 3])
    assert seen == [(s, str(tmp_path / f"seed-{s}"), None) for s in (1, 2, 3)]
    assert result["summary"]["test_accuracy"]["mean"] == pytest.approx(0.9)
    assert result["summary"]["test_accuracy"]["sd"] == pytest.approx(0.1)
    assert json.loads((tmp_path / "seeds.json").read_text())["summary"]["val_accuracy"]["max"] == 0.5


def test_seeds_flag_runs_each_seed_and_the_summary_matches_their_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--test-mode", "--data", "synthetic", "--data-dir", str(tmp_path / "data"), "--output-dir",
                     str(out), "--num-epochs", "1", "--eval-freq", "10", "--eval-iter", "2", "--lr", "1e-3",
                     "--seeds", "123,124,125"]) == 0
    accuracies = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["test_accuracy"] for s in (123, 124, 125)]
    summary = json.loads((out / "seeds.json").read_text())["summary"]["test_accuracy"]
    assert summary == pytest.approx(summarise(accuracies))
    assert f"Test accuracy over seeds 123,124,125: {format_summary(summarise(accuracies))}" in capsys.readouterr().out
