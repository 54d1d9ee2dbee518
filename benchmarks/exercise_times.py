"""How long the chapter's exercises 6.1 (pad to 1024 tokens) and 6.2 (train every layer) take on this machine.

    python benchmarks/exercise_times.py                  # about 7 minutes on a quiet 2-core machine
    python benchmarks/exercise_times.py --sample-steps 2 # a quicker look
    python benchmarks/exercise_times.py --fast-only      # only 6.1 as notebook 8 runs it (fast trainer)

Notebook 8 quotes these figures when RUN_SLOW is False. Like benchmark_fast_training.py, it times the chapter's
loop (train_classifier_simple, the chapter's AdamW) on a few training steps and a few evaluation batches of the
real SMS data, GPT-2 small's shape with random weights (the cost does not depend on the weights), and
extrapolates to the chapter's full job: 5 epochs of batch 8, evaluation every 50 steps on 5 batches, per-epoch
accuracies on 5 batches, then full train/validation/test accuracies.

On a shared machine the absolute times move with the load, so it also gives each job relative to the chapter's
settings measured in the same run, and that ratio times the measured 883 s in benchmarks/README.md for the chapter's settings.
In 6.2 nothing is frozen, so notebook 8 runs the chapter's loop. In 6.1 notebook 8 runs the fast trainer, whose
cost is one pass of the frozen blocks over every message at 1024 tokens (its cache spills to disk beyond its
memory budget, so no message is computed twice); the last row times that pass on --fast-sample training
messages and extrapolates to all of them (the trainable top, run 5 times per message, costs little beside it).
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


def measure_fast_pass(max_length, sample, workdir):
    """Seconds per message of the fast trainer's one frozen pass at max_length, and that pass over every message."""
    import gpt_model
    from beyond import data_loaders, data_splits, gpt2_tokenizer
    from beyond.activation_cache import ActivationCache
    from beyond.experiments import replace_head_and_freeze

    splits = data_splits.prepare_spam_splits(SMS_ZIP, data_dir=workdir, verbose=False)
    loaders = data_loaders.create_data_loaders(splits["train"], splits["validation"], splits["test"],
                                               gpt2_tokenizer.get_gpt2_tokenizer(), batch_size=8, max_length=max_length)
    torch.manual_seed(0)
    model = gpt_model.GPTModel(gpt_model.get_model_config("gpt2-small (124M)"))
    replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block")
    rows = [torch.as_tensor(loaders[0].dataset[i][0]) for i in range(sample)]
    with ActivationCache() as cache:
        cache.bind(model, "cpu")
        start = time.perf_counter()
        cache.add(model, rows, "cpu", progress=False)
        per_message = (time.perf_counter() - start) / sample
    messages = sum(len(loader.dataset) for loader in loaders)
    return {"tokens": max_length, "per_message": per_message, "messages": messages, "seconds": per_message * messages}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-steps", type=int, default=3, help="timed training steps per run (default 3)")
    parser.add_argument("--fast-sample", type=int, default=16,
                        help="messages timed in the fast trainer's frozen pass at 1024 tokens (default 16)")
    parser.add_argument("--fast-only", action="store_true", help="only the fast trainer's 6.1 (a minute or so)")
    args = parser.parse_args()
    if not SMS_ZIP.exists():
        sys.exit(f"{SMS_ZIP} not found: place the SMS Spam Collection zip there (see README).")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print("| run | tokens | s / step | s / eval batch | full job, extrapolated (at this load) | relative "
          f"| scaled to benchmarks/README.md's {README_CHAPTER_SECONDS} s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    reference = None
    for name, (max_length, trainable_layers) in ({} if args.fast_only else RUNS).items():
        with tempfile.TemporaryDirectory() as workdir:
            r = measure(max_length, trainable_layers, args.sample_steps, workdir)
        reference = reference or r["seconds"]
        ratio = r["seconds"] / reference
        print(f"| {name} | {r['tokens']} | {r['per_step']:.2f} | {r['per_eval_batch']:.2f} | {r['seconds'] / 60:.0f} min "
              f"| {ratio:.1f}x | {ratio * README_CHAPTER_SECONDS / 60:.0f} min |", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        r = measure_fast_pass(1024, args.fast_sample, workdir)
    print(f"\n6.1 with the fast trainer (notebook 8): its frozen pass at {r['tokens']} tokens takes "
          f"{r['per_message']:.2f} s per message ({args.fast_sample} timed), so {r['per_message'] * r['messages'] / 60:.0f} "
          f"min for all {r['messages']} messages at this load")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
