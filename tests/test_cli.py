"""`python train_classifier.py`: test mode end to end, flag spellings, user errors, Ctrl-C."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_classifier as tc
from beyond import checkpoints, cli, fast_trainer, metrics, train_command

REPO = Path(__file__).resolve().parents[1]
SHARED_ZIP = REPO.parent / "shared" / "data" / "sms_spam_collection.zip"
METRIC_FIELDS = {"train_accuracy", "val_accuracy", "test_accuracy", "train_losses", "val_losses", "train_accs",
                 "val_accs", "examples_seen", "training_seconds", "total_seconds", "settings"}


def quick_args(tmp_path, *extra, data="synthetic"):
    """Test mode, small and fast: the synthetic sample unless data says otherwise."""
    args = ["--test-mode", "--output-dir", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
            "--num-epochs", "1", "--eval-freq", "10", "--eval-iter", "2"]
    if data is not None:
        args += ["--data", str(data)]
    return args + list(extra)


def assert_outputs_complete(out_dir):
    names = os.listdir(out_dir)
    assert {"classifier.pt", "metrics.json", "loss.png", "accuracy.png", "confusion_matrix.png"} <= set(names)
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]  # no temp files left


def test_test_mode_end_to_end_on_synthetic_data(tmp_path, capsys):
    assert cli.main(quick_args(tmp_path, "--num-epochs", "2", "--trainer", "simple")) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    assert "Ep 1 (Step 000000): Train loss" in out and "Ep 2 (Step" in out
    assert "Test accuracy: " in out
    out_dir = tmp_path / "out"
    assert_outputs_complete(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert METRIC_FIELDS <= set(metrics)
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["train_accs"]) == len(metrics["val_accs"]) == 2
    assert len(metrics["train_losses"]) == len(metrics["val_losses"]) >= 2
    assert metrics["examples_seen"] > 0 and metrics["examples_seen"] % 8 == 0
    assert metrics["total_seconds"] >= metrics["training_seconds"] > 0
    settings = metrics["settings"]
    assert settings["device"] == "cpu" and settings["test_mode"] is True and settings["trainer"] == "simple"
    assert "SYNTHETIC" in settings["data_source"] and settings["label_names"] == ["ham", "spam"]
    assert settings["num_epochs"] == 2 and settings["lr"] == 5e-5 and settings["batch_size"] == 8
    for png in ("loss.png", "accuracy.png"):
        assert (out_dir / png).read_bytes()[:4] == b"\x89PNG"
    model, info = checkpoints.load_classifier(out_dir / "classifier.pt")
    assert info["label_names"] == ["ham", "spam"] and info["max_length"] == settings["max_length"]
    assert model.out_head.out_features == 2


def test_default_trainer_runs_and_is_recorded(tmp_path, capsys):
    assert cli.main(quick_args(tmp_path)) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["trainer"] == "fast"


def test_environment_switch_means_test_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUTORIAL_TEST_MODE", "1")
    args = [a for a in quick_args(tmp_path, "--trainer", "simple") if a != "--test-mode"]
    assert cli.main(args) == 0
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert settings["test_mode"] is True and settings["config"]["emb_dim"] == 32


def test_underscore_spellings_are_accepted(tmp_path, capsys):
    args = ["--" + a[2:].replace("-", "_") if a.startswith("--") else a
            for a in quick_args(tmp_path, "--trainer", "simple")]
    args += ["--batch_size=4"]
    assert "--num_epochs" in args and "--output_dir" in args
    assert cli.main(args) == 0
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert settings["batch_size"] == 4 and settings["num_epochs"] == 1


def test_normalise_flag_spelling_leaves_values_alone():
    argv = ["--num_epochs", "3", "--data=my_file.csv", "--text_column", "sms_text", "--", "--not_a_flag"]
    assert cli.normalise_flag_spelling(argv) == ["--num-epochs", "3", "--data=my_file.csv", "--text-column",
                                                "sms_text", "--", "--not_a_flag"]


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f"the real SMS data is not at {SHARED_ZIP}")
def test_test_mode_on_the_real_shared_zip(tmp_path, capsys):
    assert cli.main(quick_args(tmp_path, "--eval-freq", "50", data=SHARED_ZIP)) == 0
    out = capsys.readouterr().out
    assert "1045/149/300" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["examples_seen"] == 130 * 8  # 1045 rows, batch 8, drop_last: 130 batches
    assert metrics["settings"]["max_length"] == 120
    assert len(metrics["train_losses"]) == 3  # steps 0, 50, 100
    assert_outputs_complete(tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------
# User errors: one line on stderr, no traceback, non-zero exit; --debug shows the traceback


def assert_one_line_error(capsys, *words):
    err = capsys.readouterr().err
    # warnings for people ("warning: 1 of 60 texts were truncated") may come first; the error is one line
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0]


def test_missing_data_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert cli.main(quick_args(tmp_path, data=missing)) == 1
    assert_one_line_error(capsys, "nope.csv")
    assert not (tmp_path / "out").exists()


def test_empty_data_file_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert cli.main(quick_args(tmp_path, data=empty)) == 1
    assert_one_line_error(capsys, "empty.csv")


def test_bad_numbers_are_one_line(tmp_path, capsys):
    assert cli.main(quick_args(tmp_path, "--num-epochs", "0")) == 1
    assert_one_line_error(capsys, "--num-epochs")
    assert cli.main(quick_args(tmp_path, "--batch-size", "100000")) == 1
    assert_one_line_error(capsys, "batch")


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(quick_args(tmp_path, "--debug", data=tmp_path / "nope.csv"))


def test_unknown_flag_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-such-flag"])
    assert exc.value.code == 2


def test_script_exit_code_and_stderr_in_a_real_process(tmp_path):
    cmd = [sys.executable, str(REPO / "train_classifier.py")] + quick_args(tmp_path, data=tmp_path / "nope.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plain = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    debug = subprocess.run(cmd + ["--debug"], check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# ---------------------------------------------------------------------------------------------------------
# Ctrl-C leaves no partial outputs


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_during_training_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_command, "train_classifier_simple", interrupt)
    monkeypatch.setattr(train_command, "train_classifier_fast", interrupt, raising=False)
    assert cli.main(quick_args(tmp_path)) == 130
    assert "Interrupted" in capsys.readouterr().err
    out_dir = tmp_path / "out"
    assert not out_dir.exists() or os.listdir(out_dir) == []


def test_ctrl_c_while_writing_outputs_keeps_old_files_and_no_temp_files(tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "metrics.json").write_text('{"old": true}')
    calls = []

    def plot_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the loss plot is written, the accuracy plot is interrupted
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = tc.plot_values
    monkeypatch.setattr(train_command, "plot_values", plot_then_interrupt)
    assert cli.main(quick_args(tmp_path, "--trainer", "simple")) == 130
    assert os.listdir(out_dir) == ["metrics.json"]
    assert (out_dir / "metrics.json").read_text() == '{"old": true}'


def test_one_place_picks_the_fast_trainer_unless_a_switch_needs_the_chapters_loop(capsys):
    import gpt_model

    def choose(*flags, cfg=gpt_model.TINY_CONFIG):
        args = cli.parse_args(list(flags))
        torch.manual_seed(123)
        model = train_command._setup_classifier(gpt_model.GPTModel(dict(cfg)), args, 2)
        return train_command._choose_trainer(args, model), capsys.readouterr().out

    assert choose() == ("fast", "")
    assert choose("--trainable-token-pos", "flexible") == ("fast", "")
    assert choose("--trainer", "simple") == ("simple", "")
    for flags, why in ((["--accumulation-steps", "4"], "does not implement accumulation_steps"),
                       (["--average-embeddings"], "does not implement average_embeddings"),
                       (["--ignore-index", "1"], "does not implement ignore_index"),
                       (["--ignore-index", "50256"], None),  # no label is 50256: the chapter's loss
                       (["--trainable-layers", "lora"], "LoRA trains updates inside every block"),
                       (["--trainable-layers", "all"], "embeddings are trainable")):
        trainer, out = choose(*flags)
        assert trainer == ("fast" if why is None else "simple"), flags
        assert (why is None and out == "") or (out.count("Using the chapter's loop") == 1 and why in out), out
    trainer, out = choose(cfg={**gpt_model.TINY_CONFIG, "drop_rate": 0.1})
    assert trainer == "simple" and "dropout is on" in out
    trainer, out = choose("--trainer", "simple", "--precision", "bf16")
    assert trainer == "simple" and "--precision bf16 applies to the fast trainer only" in out


def test_fast_run_takes_its_final_metrics_from_the_cache(tmp_path, monkeypatch, capsys):
    checked, optimizers = [], []
    fast_predict, make_optimizer = fast_trainer.predict_labels_fast, fast_trainer.make_optimizer

    def compare(loader, model, device, **kwargs):
        fast = fast_predict(loader, model, device, **kwargs)
        full = metrics.predict_labels(model, loader, device, trainable_token_pos=kwargs["trainable_token_pos"])
        checked.append((fast, full, tc.calc_accuracy_loader(loader, model, device)))
        return fast

    monkeypatch.setattr(train_command, "predict_labels_fast", compare)
    monkeypatch.setattr(train_command, "make_optimizer", lambda *a, **k: optimizers.append(make_optimizer(*a, **k)) or
                        optimizers[-1])
    assert cli.main(quick_args(tmp_path)) == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert result["settings"]["trainer"] == "fast" and len(optimizers) == 1  # the fast run's optimizer
    assert len(checked) == 3  # train, validation and test, each predicted once
    for (fast, full, chapter_accuracy), split in zip(checked[1:], ("val", "test")):
        # the whole model's predictions, and the chapter's accuracy (the training loader shuffles and drops its
        # last batch, so each pass over it sees other examples: validation and test only)
        assert all(torch.equal(a, b) for a, b in zip(fast, full))
        assert result[f"{split}_accuracy"] == pytest.approx(chapter_accuracy)
    assert [metrics.classification_metrics(*fast)["confusion_matrix"] for fast, _, _ in checked[1:]] == [
        result["classification_metrics"][split]["confusion_matrix"] for split in ("validation", "test")]
    assert cli.main(quick_args(tmp_path, "--trainer", "simple")) == 0
    assert len(checked) == 3 and len(optimizers) == 1  # the chapter's loop: the chapter's optimizer, full model


def test_flexible_pads_each_batch_only_to_its_longest_message(tmp_path, monkeypatch, capsys):
    from beyond import data_loaders

    padding = []
    original = data_loaders.create_data_loaders

    def record(*args, **kwargs):
        padding.append(kwargs["per_batch_padding"])
        return original(*args, **kwargs)

    monkeypatch.setattr(data_loaders, "create_data_loaders", record)
    runs = {}
    for trainer in ("fast", "simple"):
        out = tmp_path / trainer
        assert cli.main(quick_args(tmp_path, "--trainable-token-pos", "flexible", "--trainer", trainer,
                                  "--output-dir", str(out))) == 0
        runs[trainer] = json.loads((out / "metrics.json").read_text())
        assert runs[trainer]["settings"]["trainer"] == trainer
        assert runs[trainer]["settings"]["per_batch_padding"] is True
    # the chapter's padding for comparison: per-batch padding changes no number, only the work
    options = train_command._loader_options
    monkeypatch.setattr(train_command, "_loader_options", lambda args, cfg: {**options(args, cfg), "per_batch_padding": False})
    assert cli.main(quick_args(tmp_path, "--trainable-token-pos", "flexible", "--trainer", "simple",
                              "--output-dir", str(tmp_path / "padded"))) == 0
    padded = json.loads((tmp_path / "padded" / "metrics.json").read_text())
    assert padding == [True, True, False]
    for run in runs.values():
        assert run["val_losses"] == pytest.approx(padded["val_losses"], rel=1e-4)
        assert run["train_losses"] == pytest.approx(padded["train_losses"], rel=1e-4)
        assert [run[k] for k in ("train_accuracy", "val_accuracy", "test_accuracy")] == \
            [padded[k] for k in ("train_accuracy", "val_accuracy", "test_accuracy")]
    monkeypatch.setattr(train_command, "_loader_options", options)
    assert cli.main(quick_args(tmp_path, "--trainable-token-pos", "flexible", "--disable-causal-mask")) == 0
    assert padding[-1] is False  # without the causal mask real tokens would see the padding


def test_precision_flag_reaches_the_fast_trainer(tmp_path, monkeypatch, capsys):
    precisions = []
    original = fast_trainer.train_classifier_fast

    def record(*args, **kwargs):
        precisions.append(kwargs["precision"])
        return original(*args, **kwargs)

    monkeypatch.setattr(train_command, "train_classifier_fast", record)
    assert cli.main(quick_args(tmp_path, "--precision", "bf16")) == 0
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert precisions == ["bf16"] and settings["precision"] == "bf16" and settings["trainer"] == "fast"
    assert cli.main(quick_args(tmp_path)) == 0
    assert precisions == ["bf16", "fp32"]  # fp32 by default
    capsys.readouterr()
    assert cli.main(quick_args(tmp_path, "--precision", "bf16", "--trainer", "simple")) == 0
    assert precisions == ["bf16", "fp32"]
    assert "--precision bf16 applies to the fast trainer only" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(quick_args(tmp_path, "--precision", "fp16"))
    assert exc.value.code == 2


def test_failed_download_bad_size_and_missing_gpu_are_one_line(tmp_path, monkeypatch, capsys):
    import gpt_download
    from beyond import weight_sources

    def offline(model_size, models_dir):
        raise gpt_download.DownloadError(f"could not download GPT-2 {model_size}: tried https://example.invalid; "
                                         f"place the files in {models_dir}/{model_size} by hand")

    monkeypatch.setattr(gpt_download, "download_and_load_gpt2", offline)
    monkeypatch.setattr(weight_sources, "download_and_load_gpt2_safetensors", lambda model_size, models_dir: offline(
        f"{model_size} model.safetensors", models_dir))
    monkeypatch.setattr(weight_sources, "tensorflow_import_error", lambda: None)  # no slow TensorFlow import
    monkeypatch.delenv("TUTORIAL_TEST_MODE", raising=False)
    args = [a for a in quick_args(tmp_path) if a != "--test-mode"]
    assert cli.main(args + ["--models-dir", str(tmp_path / "gpt2")]) == 1
    assert_one_line_error(capsys, "could not download GPT-2 124M")
    assert cli.main(args + ["--models-dir", str(tmp_path / "gpt2"), "--weights_format", "safetensors"]) == 1
    assert_one_line_error(capsys, "could not download GPT-2 124M model.safetensors")
    assert cli.main(quick_args(tmp_path, "--model-size", "gpt2-huge")) == 1
    assert_one_line_error(capsys, "gpt2-huge")
    if not torch.cuda.is_available():
        assert cli.main(quick_args(tmp_path, "--device", "cuda")) == 1
        assert_one_line_error(capsys, "CUDA")
    assert not (tmp_path / "out").exists()


def test_own_csv_with_named_columns_and_encoding(tmp_path, capsys):
    rows = ["category,sms"]
    for i in range(30):
        rows.append(f"ham,Caf\u00e9 at {i}? see you there")
        rows.append(f"spam,WIN a free prize number {i} now")
    csv = tmp_path / "mine.csv"
    csv.write_bytes("\n".join(rows).encode("latin-1"))
    args = quick_args(tmp_path, "--text-column", "sms", "--label-column", "category", "--encoding", "latin-1",
                      "--batch-size", "4", data=csv)
    assert cli.main(args) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["label_names"] == ["ham", "spam"]
    assert metrics["settings"]["text_column"] == "sms" and metrics["settings"]["encoding"] == "latin-1"
    _, info = checkpoints.load_classifier(tmp_path / "out")
    assert info["label_names"] == ["ham", "spam"]


def test_cache_flags_reach_the_fast_trainer_and_the_cache_is_released(tmp_path, monkeypatch, capsys):
    seen = []
    original = fast_trainer.train_classifier_fast

    def record(model, *args, **kwargs):
        seen.append((kwargs["cache"].memory, kwargs["cache"].cache_dir))
        result = original(model, *args, **kwargs)
        seen.append(kwargs["cache"].report())
        return result

    monkeypatch.setattr(train_command, "train_classifier_fast", record)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    assert cli.main(quick_args(tmp_path, "--cache-memory", "0", "--cache-dir", str(cache_dir))) == 0
    assert seen[0] == (0, str(cache_dir)) and seen[1]["memory_bytes"] == 0 and seen[1]["disk_bytes"] > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fast_cache"]["frozen_gflops"] > 0 and set(metrics["seconds"]) >= {"final_metrics", "outputs"}
    assert "frozen blocks at" in capsys.readouterr().out
    assert list(cache_dir.iterdir()) == []
    with pytest.raises(SystemExit) as exc:
        cli.main(quick_args(tmp_path, "--cache-memory", "lots"))
    assert exc.value.code == 2 and "not a size" in capsys.readouterr().err
    assert cli.main(quick_args(tmp_path, "--cache-dir", str(tmp_path / "nowhere"))) == 1
    assert_one_line_error(capsys, "--cache-dir", "not a folder")


def test_metrics_are_strict_json():
    import json

    import numpy as np

    safe = train_command._json_safe({"loss": float("nan"), "accs": [0.5, float("inf")], "t": torch.tensor([1, 2]),
                          "n": np.int64(3), "name": "x"})
    assert json.loads(json.dumps(safe, allow_nan=False)) == {"loss": None, "accs": [0.5, None], "t": [1, 2],
                                                             "n": 3, "name": "x"}


@pytest.mark.parametrize("trainer", ["fast", "simple"])
def test_messages_longer_than_the_context_are_cut_with_a_warning(tmp_path, capsys, trainer):
    import pandas as pd

    from beyond.synthetic_data import make_synthetic_spam_data

    rows = make_synthetic_spam_data(n_per_class=20)
    long_text = "win a free prize now " * 300  # about 1500 tokens: more than the model's 1024 positions
    rows = pd.concat([rows, pd.DataFrame({"Label": ["spam", "ham"] * 5, "Text": [long_text] * 10})])
    data = tmp_path / "long.csv"
    rows.to_csv(data, index=False)
    assert cli.main(quick_args(tmp_path, "--trainer", trainer, "--batch-size", "4", data=data)) == 0
    captured = capsys.readouterr()
    assert "longer than the model's context" in captured.out and "truncating to 1024 tokens" in captured.out
    assert "were longer than max_length=1024 tokens and were truncated" in captured.err
    info = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert info["settings"]["max_length"] == 1024


# ---------------------------------------------------------------------------------------------------------
# One command line: subcommands, options before or after them, one wrapper for errors, Ctrl-C and --debug


def test_unknown_command_is_one_line_naming_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["prdict", "--checkpoint", "x", "hi"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'prdict'" in err and "did you mean predict" in err
    assert all(name in err for name in ("train", "predict", "explain", "attack"))


def test_training_is_the_default_command_and_may_be_named():
    assert cli.parse_args(["--num-epochs", "3"]).command == "train"
    assert cli.parse_args([]).command == "train"
    named = cli.parse_args(["train", "--num_epochs", "3"])
    assert named.command == "train" and named.num_epochs == 3


@pytest.mark.parametrize("command, required", [("train", []), ("predict", ["--checkpoint", "run", "hi"]),
                                               ("explain", ["--checkpoint", "run", "hi"]),
                                               ("attack", ["--checkpoint", "run"])])
def test_device_is_auto_by_default_and_options_go_before_or_after_the_command(command, required):
    args = cli.parse_args([command, *required])
    assert args.command == command and args.device == "auto" and args.debug is False
    before = cli.parse_args(["--device", "cpu", "--debug", command, *required])
    after = cli.parse_args([command, *required, "--device=cpu", "--debug"])
    for args in (before, after):
        assert args.command == command and args.device == "cpu" and args.debug is True


def test_a_bad_device_name_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "--device", "tpu", "--checkpoint", "run", "hi"])
    assert exc.value.code == 2 and "'tpu' is not a device" in capsys.readouterr().err


def test_predict_gets_the_device_auto_and_errors_are_one_line_for_every_command(tmp_path, monkeypatch, capsys):
    from beyond import prediction

    seen = []
    monkeypatch.setattr(prediction, "predict_from_checkpoint",
                        lambda checkpoint, messages, device, **kwargs: seen.append(device) or [("spam", 0.9)])
    assert cli.main(["predict", "--checkpoint", "run", "hi"]) == 0
    assert seen == ["auto"] and capsys.readouterr().out == "spam\t0.9000\thi\n"
    for command in (["predict", "--checkpoint", str(tmp_path / "nope"), "hi"],
                    ["explain", "--checkpoint", str(tmp_path / "nope"), "hi"],
                    ["attack", "--checkpoint", str(tmp_path / "nope"), "--test-mode", "--data", "synthetic",
                     "--data-dir", str(tmp_path / "data")]):
        if command[0] == "predict":
            monkeypatch.undo()
        assert cli.main(command) == 1, command
        assert_one_line_error(capsys, "nope")


def test_ctrl_c_in_explain_exits_130_and_leaves_no_half_written_figure(tmp_path, monkeypatch, capsys):
    from beyond import checkpoints, look_inside

    class Figure:
        def savefig(self, path, format):  # half a file, then Ctrl-C
            with open(path, "wb") as f:
                f.write(b"\x89PNG half")
            raise KeyboardInterrupt

    model, cfg = tiny_model_and_cfg()
    checkpoints.save_classifier(tmp_path / "classifier.pt", model, cfg, ["ham", "spam"], max_length=8)
    monkeypatch.setattr(look_inside, "plot_token_attributions", lambda *args, **kwargs: Figure())
    out = tmp_path / "figs"
    out.mkdir()
    assert cli.main(["explain", "--checkpoint", str(tmp_path), "win a prize", "--output", str(out / "x.png")]) == 130
    assert "Interrupted" in capsys.readouterr().err and os.listdir(out) == []
    with pytest.raises(KeyboardInterrupt):  # --debug lets it through, traceback and all
        cli.main(["--debug", "explain", "--checkpoint", str(tmp_path), "win", "--output", str(out / "x.png")])
    assert os.listdir(out) == []


def tiny_model_and_cfg():
    import gpt_model

    torch.manual_seed(0)
    model = gpt_model.GPTModel(dict(gpt_model.TINY_CONFIG))
    model.out_head = torch.nn.Linear(gpt_model.TINY_CONFIG["emb_dim"], 2)
    return model.eval(), dict(gpt_model.TINY_CONFIG)


def test_debug_before_a_command_shows_the_traceback_in_a_real_process(tmp_path):
    cmd = [sys.executable, str(REPO / "train_classifier.py"), "--debug", "predict", "--checkpoint",
           str(tmp_path / "nope"), "hi"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    debug = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
    plain = subprocess.run([c for c in cmd if c != "--debug"], check=False, capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=120)
    assert plain.returncode == 1 and plain.stderr.startswith("error: ") and len(plain.stderr.splitlines()) == 1


def test_help_loads_no_heavy_library(tmp_path):
    heavy = {"sklearn", "pandas", "matplotlib", "tiktoken", "scipy", "tensorflow"}
    script = str(REPO / "train_classifier.py")
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--help']\n"
            f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert "commands:" in result.stdout and all(name in result.stdout for name in cli.COMMANDS)
    assert result.stdout.strip().splitlines()[-1] == "[]"
