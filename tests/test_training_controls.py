"""beyond/training_controls.py: appendix D's schedule and clipping, early stopping with the best weights back."""

import itertools
import math

import pytest
import torch

from beyond.training_controls import TrainingControls, appendix_d_lr


def test_the_schedule_warms_up_linearly_then_decays_along_a_half_cosine_to_the_floor():
    lrs = [appendix_d_lr(step, 100, 1e-3, 10, 1e-4) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(1e-4 + 5 * (1e-3 - 1e-4) / 10)
    assert lrs[10] == pytest.approx(1e-3)  # the peak, where the cosine starts
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # never rises again
    assert appendix_d_lr(100, 100, 1e-3, 10, 1e-4) == pytest.approx(1e-4)


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
    ({"grad_clip": 0}, "grad_clip"), ({"early_stopping": 0}, "early_stopping")])
def test_a_setting_that_cannot_work_is_one_clear_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainingControls(10, **kwargs)
