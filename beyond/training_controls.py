"""The training loop's usual controls, beyond the chapter's constant learning rate and fixed epochs.

Appendix D of the book adds a linear warm-up, a cosine decay and gradient clipping to chapter 5's loop; early
stopping with the best weights restored is what the Hugging Face course and fastai offer as standard. One
`TrainingControls` object carries all four, and both trainers (train_classifier_simple and the fast trainer) call
it at the same four points, so they stay exact between them:

    controls.start_step(optimizer, step)            # before the forward pass: sets (and records) the step's lr
    controls.clip(model, step)                      # after backward(), before optimizer.step()
    controls.evaluated(model, val_loss, global_step) -> True when training should stop
    controls.finish(model)                          # after the loop: the best weights back, when asked for

`step` counts optimizer steps (with gradient accumulation, one per accumulated group of batches, so the schedule
spans the updates, not the batches); `global_step` is the chapter's batch counter of its "Step" log lines. With the
defaults (no schedule, no clipping, no early stopping) every call leaves the chapter's run untouched.
"""

import math

import torch

LR_SCHEDULES = ("constant", "cosine")


def appendix_d_lr(step, total_steps, peak_lr, warmup_steps, min_lr, initial_lr=None):
    """Appendix D's learning rate at a step: linear from initial_lr (default min_lr) up to peak_lr over the
    warm-up, then a half cosine from peak_lr down to min_lr over the remaining steps (min_lr from then on)."""
    if step < warmup_steps:
        initial_lr = min_lr if initial_lr is None else initial_lr
        return initial_lr + step * (peak_lr - initial_lr) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimizer_steps(num_batches, num_epochs, accumulation_steps=1):
    """How many optimizer steps a run takes (the last batch of an epoch always steps): the schedule's length."""
    return num_epochs * math.ceil(num_batches / accumulation_steps)


class TrainingControls:
    """Learning-rate schedule, gradient clipping and early stopping for one training run.

    lr_schedule "cosine": appendix D's linear warm-up over warmup_steps from initial_lr to the peak (the
    optimizer's lr), then its cosine decay to min_lr over the rest of total_steps (both default to a tenth of the
    peak). A warm-up longer than the run never reaches the peak. grad_clip: the largest gradient norm of the
    trainable parameters, applied from the end of the warm-up on (step >= warmup_steps, as the book's repository
    does; the printed appendix D has step > warmup_steps, which skips the first step after the warm-up).
    early_stopping N: stop when the validation loss has not improved for N evaluations; finish() then puts the
    weights of the best evaluation back.
    """

    def __init__(self, total_steps, *, lr_schedule="constant", warmup_steps=0, initial_lr=None, min_lr=None,
                 grad_clip=None, early_stopping=None):
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}.")
        if warmup_steps < 0 or (lr_schedule == "constant" and warmup_steps):
            raise ValueError("warmup_steps needs lr_schedule='cosine' and a value of 0 or more.")
        if lr_schedule == "constant" and (initial_lr is not None or min_lr is not None):
            raise ValueError("initial_lr and min_lr need lr_schedule='cosine'.")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be a positive gradient norm, not {grad_clip}.")
        if early_stopping is not None and early_stopping < 1:
            raise ValueError(f"early_stopping counts evaluations: give 1 or more, not {early_stopping}.")
        self.total_steps, self.lr_schedule, self.warmup_steps = total_steps, lr_schedule, warmup_steps
        self.initial_lr, self.min_lr, self.grad_clip, self.patience = initial_lr, min_lr, grad_clip, early_stopping
        self.peak_lr = None  # the optimizer's lr, read at the first step
        self.lrs = []  # the learning rate of every batch, for metrics.json and the plot
        self.best_val_loss, self.best_step, self.stopped_at = math.inf, None, None
        self._best_weights, self._evaluations_since_best = None, 0

    @property
    def active(self):
        """True when any control is on (the chapter's run has none)."""
        return self.lr_schedule != "constant" or self.grad_clip is not None or self.patience is not None

    def start_step(self, optimizer, step):
        """Set optimizer step `step`'s learning rate on every parameter group; returns it."""
        if self.peak_lr is None:
            self.peak_lr = optimizer.param_groups[0]["lr"]
        lr = self.peak_lr
        if self.lr_schedule == "cosine":
            floor = self.peak_lr / 10
            lr = appendix_d_lr(step, self.total_steps, self.peak_lr, self.warmup_steps,
                               floor if self.min_lr is None else self.min_lr,
                               floor if self.initial_lr is None else self.initial_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.lrs.append(lr)
        return lr

    def clip(self, model, step):
        """Clip the trainable parameters' gradient norm to grad_clip once the warm-up is over."""
        if self.grad_clip is not None and step >= self.warmup_steps:
            params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm=self.grad_clip)

    def log_suffix(self):
        """What an evaluation's log line adds: the step's learning rate when a schedule moves it, else nothing."""
        return f", LR {self.lrs[-1]:.3e}" if self.lr_schedule != "constant" and self.lrs else ""

    def evaluated(self, model, val_loss, global_step):
        """Record an evaluation; True (after saying so) when early stopping says to stop here."""
        if self.patience is None:
            return False
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step, self._evaluations_since_best = val_loss, global_step, 0
            self._best_weights = trainable_state(model)
            return False
        self._evaluations_since_best += 1
        if self._evaluations_since_best >= self.patience:
            self.stopped_at = global_step
            print(f"Early stopping at step {global_step:06d}: the validation loss has not improved for "
                  f"{self.patience} evaluation{'s' if self.patience > 1 else ''}.")
            return True
        return False

    def finish(self, model):
        """Put the best evaluation's trainable weights back (early stopping only, saying so); returns the model."""
        if self._best_weights is not None:
            model.load_state_dict(self._best_weights, strict=False)
            print(f"Restored the weights of step {self.best_step:06d} (best validation loss "
                  f"{self.best_val_loss:.3f}).")
        return model

    def summary(self):
        """What metrics.json records of the controls (steps_run counts batches, as the log's Step does)."""
        return {"lr_schedule": self.lr_schedule, "warmup_steps": self.warmup_steps, "grad_clip": self.grad_clip,
                "early_stopping": self.patience, "peak_lr": self.peak_lr, "best_step": self.best_step,
                "best_val_loss": None if self.best_step is None else self.best_val_loss,
                "stopped_at_step": self.stopped_at, "steps_run": len(self.lrs)}


def trainable_state(model):
    """A copy of the trainable parameters (what training changes), keyed as in the model's state_dict."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def controls_for(args, num_batches):
    """The TrainingControls the train command's flags ask for (num_batches: per epoch), or None: the chapter's run."""
    controls = TrainingControls(optimizer_steps(num_batches, args.num_epochs, args.accumulation_steps),
                                lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
                                grad_clip=args.grad_clip, early_stopping=args.early_stopping)
    return controls if controls.active else None


def plot_learning_rates(lrs, batches_per_epoch):
    """The learning rate of every training step against epochs (as the loss plot's axis); returns the Figure."""
    import matplotlib.pyplot as plt  # here, not at the top: training needs no plotting library

    fig, ax = plt.subplots(figsize=(5, 3))
    plt.close(fig)  # a notebook shows the returned figure once; scripts keep no open figures
    ax.plot([(step + 1) / batches_per_epoch for step in range(len(lrs))], [float(lr) for lr in lrs],
            label="Learning rate")
    ax.set_xlabel("Epochs")
    ax.set_ylabel("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend()
    fig.tight_layout()
    return fig
