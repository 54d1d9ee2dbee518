"""Several processes: torchrun with two CPU processes trains like one process with the same global batch."""


import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beyond import checkpoints, cli, distributed, train_command
from beyond.synthetic_data import make_synthetic_spam_data

from tiny import tiny_classifier

REPO = Path(__file__).resolve().parents[1]


def _one_and_two_processes(tmp_path, flags):
    """metrics.json of one plain run and of a 2-process torchrun (gloo on the CPU) with the same flags, and the run."""
    assert cli.main([*flags, "--data-dir", str(tmp_path / "d1"), "--output-dir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(REPO / "train_classifier.py"), *flags, "--data-dir", str(tmp_path / "d2"),
                          "--output-dir", str(tmp_path / "two")],
                         check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    return one, two, run


def test_torchrun_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    data = tmp_path / "sms.csv"
    make_synthetic_spam_data(n_per_class=30).to_csv(data, index=False)
    flags = ["--test-mode", "--data", str(data), "--num-epochs", "2", "--batch-size", "4", "--eval-freq", "4",
             "--eval-iter", "2", "--trainer", "simple", "--lr", "1e-3"]
    one, two, run = _one_and_two_processes(tmp_path, flags)
    assert run.stdout.count("Ep 1 (Step 000000)") == 1  # only rank 0 prints
    assert two["examples_seen"] == one["examples_seen"] == 2 * 40  # 10 global batches of 4 per epoch
    assert two["val_losses"] == pytest.approx(one["val_losses"], abs=1e-5)
    assert len(one["val_losses"]) == 5 and one["val_losses"][0] != one["val_losses"][-1]  # it did train
    assert two["classification_metrics"] == one["classification_metrics"]
    assert (two["train_accuracy"], two["test_accuracy"]) == (one["train_accuracy"], one["test_accuracy"])
    # the same weights up to float summation order (Adam magnifies it on the few near-zero gradients)
    w1 = checkpoints.load_classifier(tmp_path / "one")[0].state_dict()  # every weight, the base's included
    w2 = checkpoints.load_classifier(tmp_path / "two")[0].state_dict()
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


# --- issue 10: torchrun runs print and save what one process does; errors leave the process group ---

REPO = Path(__file__).resolve().parents[1]


def _flags(tmp_path):
    data = tmp_path / "sms.csv"
    make_synthetic_spam_data(n_per_class=30).to_csv(data, index=False)
    return ["--test-mode", "--data", str(data), "--num-epochs", "2", "--batch-size", "4", "--eval-freq", "3",
            "--eval-iter", "3", "--trainer", "simple", "--lr", "1e-3"]


def test_torchrun_prints_and_saves_the_training_losses_and_accuracies_of_one_process(tmp_path):
    flags = _flags(tmp_path)
    one, two, run = _one_and_two_processes(tmp_path, flags)
    assert len(set(one["train_losses"])) > 1  # it trained
    assert two["train_losses"] == pytest.approx(one["train_losses"], abs=1e-5)
    assert two["train_accs"] == pytest.approx(one["train_accs"], abs=1e-9)
    printed = [line for line in run.stdout.splitlines() if line.startswith("Training accuracy: ") and "|" in line]
    assert printed == [f"Training accuracy: {a * 100:.2f}% | Validation accuracy: {v * 100:.2f}%"
                       for a, v in zip(one["train_accs"], one["val_accs"])]


def test_no_padding_under_torchrun_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_command, "setup_distributed", lambda device: (0, 2, torch.device("cpu")))
    monkeypatch.setattr(train_command, "distributed_environment", lambda: (0, 2, 0))
    code = cli.main([*_flags(tmp_path), "--data-dir", str(tmp_path / "d"), "--output-dir", str(tmp_path / "o"),
                     "--no-padding"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "--no-padding" in err and "without torchrun" in err


def test_the_process_group_is_left_after_an_error(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(train_command, "cleanup_distributed", lambda: calls.append(1))
    code = cli.main(["--test-mode", "--data", str(tmp_path / "missing.csv"), "--data-dir", str(tmp_path / "d"),
                     "--output-dir", str(tmp_path / "o")])
    assert code == 1 and calls == [1]


def test_training_shards_evaluate_on_whole_batches():
    model = torch.nn.Linear(1, 1)
    full = torch.utils.data.DataLoader(list(range(8)), batch_size=4, drop_last=True)
    shard = torch.utils.data.DataLoader(list(range(8)), batch_size=2,
                                        sampler=distributed.ShardedSampler(full.sampler, 4, 0, 2))
    loader = distributed.TrainingShards(model, shard, full)
    assert len(loader) == len(full) == 2
    model.train()
    assert [b.tolist() for b in loader] == [[0, 2], [4, 6]]
    model.eval()
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_only_rank0_prints_inside_the_block_and_stdout_is_restored(monkeypatch, capsys):
    import sys

    stdout = sys.stdout
    monkeypatch.setenv("RANK", "1")
    with distributed.printing_on_rank0_only():
        print("from rank 1")
    assert sys.stdout is stdout
    print("after the block")
    monkeypatch.setenv("RANK", "0")
    with distributed.printing_on_rank0_only():
        print("from rank 0")
    assert capsys.readouterr().out == "after the block\nfrom rank 0\n"
