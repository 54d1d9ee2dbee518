"""The training loop's usual controls, beyond the chapter's constant learning rate and fixed epochs.

Appendix D of the book adds a linear warm-up, a cosine decay and gradient clipping to chapter 5's loop; early
stopping with the best weights restored is what the Hugging Face course and fastai offer as standard. One
`TrainingControls` object carries all four, and both trainers (the switch-aware loop and the fast trainer) call it
at the same four points, so they stay exact between them:

    controls.start_step(optimizer, global_step)   # before the forward pass: sets (and records) the step's lr
    controls.clip(model, global_step)              # after backward(), before optimizer.step()
    controls.evaluated(model, val_loss, global_step) -> True when training should stop
    controls.finish(model)                         # after the loop: the best weights back, when asked for

With the defaults (no schedule, no clipping, no early stopping) every call leaves the chapter's run untouched.
"""

import math

import torch

LR_SCHEDULES = ("constant", "cosine")


def appendix_d_lr(step, total_steps, peak_lr, warmup_steps, min_lr):
    """Appendix D's learning rate at a step: linear from min_lr to peak_lr, then a half cosine down to min_lr."""
    if step < warmup_steps:
        return min_lr + step * (peak_lr - min_lr) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class TrainingControls:
    """Learning-rate schedule, gradient clipping and early stopping for one training run.

    lr_schedule "cosine": appendix D's warm-up over warmup_steps and cosine decay over total_steps, between
    min_lr (default: a tenth of the peak, the optimizer's lr) and the peak. grad_clip: the largest gradient norm,
    applied from the end of the warm-up on, as appendix D does. early_stopping N: stop when the validation loss
    has not improved for N evaluations; the weights of the best evaluation are restored by finish().
    """

    def __init__(self, total_steps, *, lr_schedule="constant", warmup_steps=0, min_lr=None, grad_clip=None,
                 early_stopping=None):
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}.")
        if warmup_steps < 0 or (lr_schedule == "constant" and warmup_steps):
            raise ValueError("warmup_steps needs lr_schedule='cosine' and a value of 0 or more.")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be a positive gradient norm, not {grad_clip}.")
        if early_stopping is not None and early_stopping < 1:
            raise ValueError(f"early_stopping counts evaluations: give 1 or more, not {early_stopping}.")
        self.total_steps, self.lr_schedule, self.warmup_steps = total_steps, lr_schedule, warmup_steps
        self.min_lr, self.grad_clip, self.patience = min_lr, grad_clip, early_stopping
        self.peak_lr = None  # the optimizer's lr, read at the first step
        self.lrs = []  # the learning rate of every step, for the log and the plot
        self.best_val_loss, self.best_step, self.stopped_at = math.inf, None, None
        self._best_weights, self._evaluations_since_best = None, 0

    @property
    def active(self):
        """True when any control is on (the chapter's run has none)."""
        return self.lr_schedule != "constant" or self.grad_clip is not None or self.patience is not None

    def start_step(self, optimizer, global_step):
        """Set this step's learning rate on every parameter group; returns it."""
        if self.peak_lr is None:
            self.peak_lr = optimizer.param_groups[0]["lr"]
        lr = self.peak_lr
        if self.lr_schedule == "cosine":
            min_lr = self.peak_lr / 10 if self.min_lr is None else self.min_lr
            lr = appendix_d_lr(global_step, self.total_steps, self.peak_lr, self.warmup_steps, min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.lrs.append(lr)
        return lr

    def clip(self, model, global_step):
        """Clip the trainable parameters' gradient norm to grad_clip once the warm-up is over."""
        if self.grad_clip is not None and global_step >= self.warmup_steps:
            params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm=self.grad_clip)

    def evaluated(self, model, val_loss, global_step):
        """Record an evaluation; True when early stopping says to stop here."""
        if self.patience is None:
            return False
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step, self._evaluations_since_best = val_loss, global_step, 0
            self._best_weights = trainable_state(model)
            return False
        self._evaluations_since_best += 1
        if self._evaluations_since_best >= self.patience:
            self.stopped_at = global_step
            return True
        return False

    def finish(self, model):
        """Put the best evaluation's trainable weights back (early stopping only); returns the model."""
        if self._best_weights is not None:
            model.load_state_dict(self._best_weights, strict=False)
        return model

    def summary(self):
        """What metrics.json records of the controls."""
        return {"lr_schedule": self.lr_schedule, "warmup_steps": self.warmup_steps, "grad_clip": self.grad_clip,
                "early_stopping": self.patience, "best_step": self.best_step,
                "best_val_loss": None if self.best_step is None else self.best_val_loss,
                "stopped_at_step": self.stopped_at, "steps_run": len(self.lrs)}


def trainable_state(model):
    """A copy of the trainable parameters (what training changes), keyed as in the model's state_dict."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
