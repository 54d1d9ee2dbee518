"""beyond/training_controls.py: appendix D's schedule and clipping, early stopping with the best weights back."""

import copy
import itertools
import json
import math
import re

import pytest
import torch
from test_cli import assert_one_line_error, quick_args
from test_fast_trainer import make_model, run  # the two trainers' shared tiny setup

import spam_dataset
import train_classifier
from beyond import bonus_training, checkpoints, cli, fast_trainer, gpt2_tokenizer, train_command
from beyond.training_controls import TrainingControls, appendix_d_lr, optimizer_steps, trainable_state


def test_the_schedule_warms_up_linearly_then_decays_along_a_half_cosine_to_the_floor():
    lrs = [appendix_d_lr(step, 100, 1e-3, 10, 1e-4) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(1e-4 + 5 * (1e-3 - 1e-4) / 10)
    assert lrs[10] == pytest.approx(1e-3)  # the peak, where the cosine starts
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # never rises again
    assert appendix_d_lr(100, 100, 1e-3, 10, 1e-4) == pytest.approx(1e-4)
    # appendix D warms up from its own initial_lr, and decays to min_lr
    assert appendix_d_lr(0, 100, 1e-3, 10, 1e-6, initial_lr=3e-5) == pytest.approx(3e-5)
    assert appendix_d_lr(5, 100, 1e-3, 10, 1e-6, initial_lr=3e-5) == pytest.approx(3e-5 + 5 * (1e-3 - 3e-5) / 10)
    assert appendix_d_lr(100, 100, 1e-3, 10, 1e-6, initial_lr=3e-5) == pytest.approx(1e-6)


def _model_and_optimizer(lr=5e-5):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=lr)


def test_the_default_controls_leave_the_chapters_constant_learning_rate_alone():
    model, optimizer = _model_and_optimizer()
    controls = TrainingControls(10)
    assert not controls.active
    for step in range(10):
        assert controls.start_step(optimizer, step) == 5e-5
    assert optimizer.param_groups[0]["lr"] == 5e-5
    assert controls.evaluated(model, 1.0, 0) is False


def test_cosine_sets_every_parameter_groups_lr_with_a_tenth_of_the_peak_as_floor():
    _, optimizer = _model_and_optimizer(lr=1e-3)
    controls = TrainingControls(20, lr_schedule="cosine", warmup_steps=4)
    seen = [controls.start_step(optimizer, step) for step in range(20)]
    assert seen[0] == pytest.approx(1e-4) and seen[4] == pytest.approx(1e-3)
    assert optimizer.param_groups[0]["lr"] == seen[-1] == controls.lrs[-1]


def test_clipping_starts_at_the_end_of_the_warm_up_and_bounds_the_gradient_norm():
    model, _ = _model_and_optimizer()
    controls = TrainingControls(10, lr_schedule="cosine", warmup_steps=2, grad_clip=0.5)
    for step, clipped in ((1, False), (2, True)):
        model.zero_grad()
        (model(torch.ones(4, 3)) * 100).sum().backward()
        before = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
        controls.clip(model, step)
        after = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
        assert before > 0.5
        assert (after == pytest.approx(0.5, rel=1e-4)) if clipped else (after == before)


def test_early_stopping_stops_after_patience_evaluations_without_improvement_and_restores_the_best():
    model, _ = _model_and_optimizer()
    controls = TrainingControls(100, early_stopping=2)
    best = model.weight.detach().clone()
    assert controls.evaluated(model, 0.5, 0) is False  # the best so far: its weights are kept
    with torch.no_grad():
        model.weight.add_(1.0)
    assert controls.evaluated(model, 0.6, 5) is False
    assert controls.evaluated(model, 0.5, 10) is True  # equal is no improvement: second miss stops
    controls.finish(model)
    assert torch.equal(model.weight, best)
    assert controls.summary()["best_step"] == 0 and controls.summary()["stopped_at_step"] == 10


@pytest.mark.parametrize("kwargs, words", [
    ({"lr_schedule": "linear"}, "lr_schedule"), ({"warmup_steps": 5}, "warmup_steps"),
    ({"grad_clip": 0}, "grad_clip"), ({"early_stopping": 0}, "early_stopping"), ({"min_lr": 1e-6}, "min_lr")])
def test_a_setting_that_cannot_work_is_one_clear_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainingControls(10, **kwargs)


# --- both trainers, one switch at a time: the same losses, learning rates, printout and weights ---

STEPS = optimizer_steps(9, 3)  # run(): 3 epochs of 9 batches, evaluated every 4 steps
SWITCHES = {"cosine and warm-up": {"lr_schedule": "cosine", "warmup_steps": 6},
            "gradient clipping": {"grad_clip": 0.05},
            "early stopping": {"early_stopping": 1},
            "all three": {"lr_schedule": "cosine", "warmup_steps": 6, "grad_clip": 0.05, "early_stopping": 1}}


def run_with(trainer, **settings):
    """run() from test_fast_trainer with fresh controls; returns (its result, the controls)."""
    controls = TrainingControls(STEPS, **settings)
    return run(trainer, make_model(), controls=controls), controls


@pytest.mark.parametrize("name", SWITCHES)
def test_each_switch_gives_the_same_run_in_both_trainers(name):
    (f_res, f_steps, f_lines, f_state, _), fast = run_with(fast_trainer.train_classifier_fast, **SWITCHES[name])
    (s_res, s_steps, s_lines, s_state, _), simple = run_with(bonus_training.train_classifier_simple,
                                                             **SWITCHES[name])
    assert not any("not used" in line for line in f_lines)  # the fast trainer ran, not its fallback
    assert fast.lrs == simple.lrs
    f_summary, s_summary = fast.summary(), simple.summary()
    f_best, s_best = f_summary.pop("best_val_loss"), s_summary.pop("best_val_loss")
    assert (f_best is s_best is None) or f_best == pytest.approx(s_best, rel=1e-4)
    assert f_summary == s_summary  # the same best step, the same stop
    assert f_steps == pytest.approx(s_steps, rel=1e-4)
    for f_values, s_values in zip(f_res[:2], s_res[:2]):
        assert f_values == pytest.approx(s_values, rel=1e-4)
    assert f_res[2:] == s_res[2:]
    assert [line.split(":")[0] for line in f_lines] == [line.split(":")[0] for line in s_lines]
    for key in s_state:
        if "att.W_key.bias" not in key:  # no true gradient: float noise only (see test_fast_trainer)
            torch.testing.assert_close(f_state[key], s_state[key], rtol=1e-3, atol=1e-4)
    # the switch changed the run: the chapter's run (no controls) ends elsewhere
    chapter = run(bonus_training.train_classifier_simple, make_model())
    assert not all(torch.equal(chapter[3][k], s_state[k]) for k in s_state)


def test_the_default_controls_leave_both_trainers_runs_exactly_as_without_them():
    for trainer in (bonus_training.train_classifier_simple, fast_trainer.train_classifier_fast):
        (res, steps, lines, state, rng), controls = run_with(trainer)
        plain = run(trainer, make_model())
        assert (res, steps, lines) == plain[:3] and torch.equal(rng, plain[4])
        assert all(torch.equal(state[k], plain[3][k]) for k in state)
        assert controls.lrs == [5e-4] * STEPS  # every step ran at the chapter's constant lr


def test_the_schedule_reaches_the_optimizer_at_every_step():
    seen = []

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    controls = TrainingControls(STEPS, lr_schedule="cosine", warmup_steps=6)
    run(fast_trainer.train_classifier_fast, make_model(), controls=controls,
        make_optimizer=lambda model, lr, weight_decay: Recording(model.parameters(), lr=lr, weight_decay=weight_decay))
    assert seen == controls.lrs and len(seen) == STEPS
    assert seen[0] == pytest.approx(5e-5) and seen[6] == pytest.approx(5e-4) and seen[-1] < seen[6]


class Snapshots(TrainingControls):
    """Controls that also keep the trainable weights of every evaluation."""

    def evaluated(self, model, val_loss, global_step):
        self.snapshots = {**getattr(self, "snapshots", {}), global_step: copy.deepcopy(trainable_state(model))}
        self.val_losses = [*getattr(self, "val_losses", []), val_loss]
        return super().evaluated(model, val_loss, global_step)


@pytest.mark.parametrize("trainer", [bonus_training.train_classifier_simple, fast_trainer.train_classifier_fast])
def test_early_stopping_stops_at_the_right_step_and_restores_the_best_evaluations_weights(trainer):
    # the full run's validation losses, and the weights at each evaluation
    full = Snapshots(STEPS, lr_schedule="cosine", warmup_steps=0)
    run(trainer, make_model(), controls=full)
    steps = sorted(full.snapshots)
    # where patience 1 must stop: the first evaluation not better than the best before it
    best, stop = 0, None
    for i in range(1, len(steps)):
        if full.val_losses[i] < full.val_losses[best]:
            best = i
        else:
            stop = i
            break
    assert stop is not None, "the tiny run should have an evaluation that does not improve"
    controls = TrainingControls(STEPS, lr_schedule="cosine", warmup_steps=0, early_stopping=1)
    result, _, lines, state, _ = run(trainer, make_model(), controls=controls)
    assert controls.stopped_at == steps[stop] and controls.best_step == steps[best]
    assert controls.summary()["steps_run"] == steps[stop] + 1
    assert len(result[1]) == stop + 1  # no evaluation after the stop
    assert f"Early stopping at step {steps[stop]:06d}" in "\n".join(lines)
    assert f"Restored the weights of step {steps[best]:06d}" in lines[-1]
    for name, weight in full.snapshots[steps[best]].items():
        assert torch.equal(state[name], weight)


def test_accumulation_schedules_optimizer_steps_and_keeps_one_lr_per_batch():
    controls = TrainingControls(optimizer_steps(9, 3, 2), lr_schedule="cosine", warmup_steps=2, grad_clip=1.0)
    run(bonus_training.train_classifier_simple, make_model(), controls=controls, accumulation_steps=2)
    assert len(controls.lrs) == 27  # one per batch, for the log and the plot
    per_epoch = controls.lrs[:9]
    assert per_epoch[0::2] == per_epoch[1::2] + [per_epoch[8]]  # a pair of batches shares its update's lr
    assert controls.lrs[2] == pytest.approx(2.75e-4)  # batch 2: optimizer step 1, half-way up the warm-up
    assert controls.lrs[4] == pytest.approx(5e-4)  # batch 4: optimizer step 2, the peak
    assert controls.lrs[-1] == pytest.approx(appendix_d_lr(14, 15, 5e-4, 2, 5e-5))  # the run's last update


# --- the command line: the flags, metrics.json, the plot, the saved classifier, the errors ---


EARLY_STOP = ("--num-epochs", "2", "--eval-freq", "5", "--lr", "0.02", "--early-stopping", "1")  # stops at 20


@pytest.mark.filterwarnings("ignore:.*truncated")  # one synthetic test message is longer than the training ones
@pytest.mark.parametrize("trainer", ["fast", "simple"])
def test_early_stopping_from_the_command_line_saves_the_best_weights(tmp_path, monkeypatch, capsys, trainer):
    made = []
    monkeypatch.setattr(train_command, "controls_for", lambda args, n: made.append(Snapshots(
        optimizer_steps(n, args.num_epochs), early_stopping=args.early_stopping)) or made[-1])
    args = [*quick_args(tmp_path, *EARLY_STOP, "--trainer", trainer)]
    assert cli.main(args[:args.index("--eval-freq")] + args[args.index("--eval-freq") + 2:]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    summary = result["training_controls"]
    assert summary["stopped_at_step"] is not None and summary["best_step"] < summary["stopped_at_step"]
    assert f"Restored the weights of step {summary['best_step']:06d}" in out
    assert len(result["learning_rates"]) == summary["steps_run"] == summary["stopped_at_step"] + 1
    assert (tmp_path / "out" / "lr.png").read_bytes()[:4] == b"\x89PNG"
    # the saved classifier is the best evaluation's: its weights, and the accuracy the run printed
    model, info = checkpoints.load_classifier(tmp_path / "out" / "classifier.pt")
    for name, weight in made[0].snapshots[summary["best_step"]].items():
        assert torch.equal(model.state_dict()[name], weight)
    test_set = spam_dataset.SpamDataset(tmp_path / "data" / "test.csv", gpt2_tokenizer.get_gpt2_tokenizer(),
                                        max_length=info["max_length"])
    loader = torch.utils.data.DataLoader(test_set, batch_size=8)
    assert train_classifier.calc_accuracy_loader(loader, model, "cpu") == pytest.approx(result["test_accuracy"])


def test_the_chapters_run_writes_no_learning_rate_outputs(tmp_path, capsys):
    assert cli.main(quick_args(tmp_path)) == 0
    assert "LR " not in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "training_controls" not in result and not (tmp_path / "out" / "lr.png").exists()


def test_the_flags_reach_metrics_json_and_the_log(tmp_path, capsys):
    flags = ("--lr-schedule", "cosine", "--warmup-steps", "3", "--grad-clip", "1.0", "--early-stopping", "50")
    assert cli.main(quick_args(tmp_path, *flags)) == 0
    assert re.search(r"Ep 1 \(Step 000000\): Train loss \d\.\d{3}, Val loss \d\.\d{3}, LR 5\.000e-06\n",
                     capsys.readouterr().out)
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    summary, settings = result["training_controls"], result["settings"]
    assert (summary["lr_schedule"], summary["warmup_steps"], summary["grad_clip"], summary["early_stopping"]) == (
        "cosine", 3, 1.0, 50)
    assert summary["stopped_at_step"] is None and summary["steps_run"] == len(result["learning_rates"]) == 26
    assert result["learning_rates"][0] == pytest.approx(5e-6) and result["learning_rates"][3] == pytest.approx(5e-5)
    assert (settings["lr_schedule"], settings["warmup_steps"], settings["grad_clip"]) == ("cosine", 3, 1.0)


@pytest.mark.parametrize("flags, words", [
    (("--warmup-steps", "5"), ("--warmup-steps", "--lr-schedule cosine")),
    (("--lr-schedule", "cosine", "--warmup-steps", "-1"), ("--warmup-steps",)),
    (("--grad-clip", "0"), ("--grad-clip", "positive")),
    (("--early-stopping", "0"), ("--early-stopping", "at least 1")),
    (("--protocol", "cv5", "--grad-clip", "-1"), ("--grad-clip",))])
def test_a_bad_loop_setting_is_one_sentence(tmp_path, capsys, flags, words):
    assert cli.main(quick_args(tmp_path, *flags)) == 1
    assert_one_line_error(capsys, *words)
    assert not (tmp_path / "out").exists()


def test_an_unknown_schedule_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(quick_args(tmp_path, "--lr-schedule", "linear"))
    assert exit_info.value.code == 2 and "--lr-schedule" in capsys.readouterr().err
