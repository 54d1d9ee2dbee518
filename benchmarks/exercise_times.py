"""How long the chapter's exercises 6.1 (pad to 1024 tokens) and 6.2 (train every layer) take on this machine.

    python benchmarks/exercise_times.py                  # 15 minutes on the shared 2-core machine (load 7-10)
    python benchmarks/exercise_times.py --sample-steps 2 # a quicker look

Notebook 8 quotes these figures when RUN_SLOW is False. Like benchmark_fast_training.py, it times the chapter's
loop (train_classifier_simple, the chapter's AdamW) on a few training steps and a few evaluation batches of the
real SMS data, GPT-2 small's shape with random weights (the cost does not depend on the weights), and
extrapolates to the chapter's full job: 5 epochs of batch 8, evaluation every 50 steps on 5 batches, per-epoch
accuracies on 5 batches, then full train/validation/test accuracies.

On a shared machine the absolute times move with the load, so it also gives each job relative to the chapter's
settings measured in the same run, and that ratio times the measured 883 s in benchmarks/README.md for the chapter's settings.
The fast trainer does not help much in either exercise: in 6.2 nothing is frozen, so it runs the chapter's loop;
in 6.1 its 2 GiB cache holds only about two thirds of the training messages at 1024 tokens, and a batch with
one message missing from the cache runs the frozen blocks on the whole batch.
"""
README_CHAPTER_SECONDS = 883  # benchmarks/README.md's table: the chapter's loop, chapter settings, this machine

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SMS_ZIP = REPO.parent / "shared" / "data" / "sms_spam_collection.zip"
RUNS = {  # name -> (max_length, trainable_layers)
    "chapter settings (120 tokens, last block)": (None, "last_block"),
    "6.1: padded to 1024 tokens": (1024, "last_block"),
    "6.2: every layer trains": (None, "all"),
}


class StopSample(Exception):
    """Raised from the optimizer's step to stop the chapter's loop after the sampled steps."""


def measure(max_length, trainable_layers, sample_steps, workdir):
    """Seconds per training step and per evaluation batch of the chapter's loop, and its full job extrapolated."""
    import gpt_model
    import train_classifier as tc
    from beyond import data_loaders, data_splits, gpt2_tokenizer
    from beyond.experiments import replace_head_and_freeze

    splits = data_splits.prepare_spam_splits(SMS_ZIP, data_dir=workdir, verbose=False)
    loaders = data_loaders.create_data_loaders(splits["train"], splits["validation"], splits["test"],
                                               gpt2_tokenizer.get_gpt2_tokenizer(), batch_size=8, max_length=max_length)
    train_loader, val_loader, test_loader = loaders
    torch.manual_seed(0)
    model = gpt_model.GPTModel(gpt_model.get_model_config("gpt2-small (124M)"))
    torch.manual_seed(123)
    replace_head_and_freeze(model, num_classes=2, trainable_layers=trainable_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)  # the chapter's

    marks, step = [], optimizer.step

    def timed_step(*args, **kwargs):  # wraps the real step: the loop runs unchanged until the sample is done
        step(*args, **kwargs)
        marks.append(time.perf_counter())
        if len(marks) >= sample_steps + 2:
            raise StopSample

    optimizer.step = timed_step
    try:  # the loop evaluates at step 0 only (eval_iter=1 keeps that short), between marks[0] and marks[1]
        tc.train_classifier_simple(model, train_loader, val_loader, optimizer, "cpu", 5, 10**9, 1)
    except StopSample:
        pass
    per_step = (marks[-1] - marks[1]) / (len(marks) - 2)  # steps 3.. : no evaluation, no one-time costs

    start = time.perf_counter()
    with torch.no_grad():
        tc.calc_loss_loader(val_loader, model, "cpu", num_batches=2)
    per_eval_batch = (time.perf_counter() - start) / 2

    steps = 5 * len(train_loader)
    evaluations = len(range(0, steps, 50))
    during = (evaluations + 5) * (min(5, len(train_loader)) + min(5, len(val_loader)))
    final = len(train_loader) + len(val_loader) + len(test_loader)
    return {"tokens": train_loader.dataset.max_length, "per_step": per_step, "per_eval_batch": per_eval_batch,
            "seconds": steps * per_step + (during + final) * per_eval_batch}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-steps", type=int, default=3, help="timed training steps per run (default 3)")
    args = parser.parse_args()
    if not SMS_ZIP.exists():
        sys.exit(f"{SMS_ZIP} not found: place the SMS Spam Collection zip there (see README).")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print("| run | tokens | s / step | s / eval batch | full job, extrapolated (at this load) | relative "
          f"| scaled to benchmarks/README.md's {README_CHAPTER_SECONDS} s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    reference = None
    for name, (max_length, trainable_layers) in RUNS.items():
        with tempfile.TemporaryDirectory() as workdir:
            r = measure(max_length, trainable_layers, args.sample_steps, workdir)
        reference = reference or r["seconds"]
        ratio = r["seconds"] / reference
        print(f"| {name} | {r['tokens']} | {r['per_step']:.2f} | {r['per_eval_batch']:.2f} | {r['seconds'] / 60:.0f} min "
              f"| {ratio:.1f}x | {ratio * README_CHAPTER_SECONDS / 60:.0f} min |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
