"""How long the chapter's exercises 6.1 (pad to 1024 tokens) and 6.2 (train every layer) take on this machine.

    python benchmarks/exercise_times.py                  # about 5 minutes on 2 idle cores
    python benchmarks/exercise_times.py --sample-steps 2 # a quicker look

Notebook 8 quotes these figures when RUN_SLOW is False. Like benchmark_fast_training.py, it times the chapter's
loop (train_classifier_simple, the chapter's AdamW) on a few training steps and a few evaluation batches of the
real SMS data, GPT-2 small's shape with random weights (the cost does not depend on the weights), and
extrapolates to the chapter's full job: 5 epochs of batch 8, evaluation every 50 steps on 5 batches, per-epoch
accuracies on 5 batches, then full train/validation/test accuracies. It also times the fast trainer's one pass
of the frozen blocks over every message (a lower bound on the fast trainer's time: where it cannot run, as in
6.2, or where its cache is full, as in 6.1 at 1024 tokens, it does more).
"""

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
    """Seconds per training step, per evaluation batch and per frozen-prefix batch; the job's size."""
    import gpt_download
    import gpt_model
    import spam_dataset
    import train_classifier as tc

    splits = spam_dataset.prepare_spam_splits(SMS_ZIP, data_dir=workdir, verbose=False)
    loaders = spam_dataset.create_data_loaders(splits["train"], splits["validation"], splits["test"],
                                               gpt_download.get_gpt2_tokenizer(), batch_size=8, max_length=max_length)
    train_loader, val_loader, test_loader = loaders
    torch.manual_seed(0)
    model = gpt_model.GPTModel(gpt_model.get_model_config("gpt2-small (124M)"))
    torch.manual_seed(123)
    tc.replace_head_and_freeze(model, num_classes=2, trainable_layers=trainable_layers)
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
    start = time.perf_counter()
    with torch.no_grad():  # the fast trainer's one pass: embeddings and every block but the last
        ids = next(iter(val_loader))[0]
        x = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1]))
        model.trf_blocks[:-1](x)
    per_prefix_batch = time.perf_counter() - start

    steps = 5 * len(train_loader)
    evaluations = len(range(0, steps, 50))
    during = (evaluations + 5) * (min(5, len(train_loader)) + min(5, len(val_loader)))
    final = len(train_loader) + len(val_loader) + len(test_loader)
    messages = len(train_loader.dataset) + len(val_loader.dataset) + len(test_loader.dataset)
    return {"tokens": train_loader.dataset.max_length, "per_step": per_step, "per_eval_batch": per_eval_batch,
            "chapter_minutes": (steps * per_step + (during + final) * per_eval_batch) / 60,
            "prefix_minutes": messages / 8 * per_prefix_batch / 60}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-steps", type=int, default=3, help="timed training steps per run (default 3)")
    args = parser.parse_args()
    if not SMS_ZIP.exists():
        sys.exit(f"{SMS_ZIP} not found: place the SMS Spam Collection zip there (see README).")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print("| run | tokens | s / step | s / eval batch | chapter's loop, full job (extrapolated) "
          "| fast trainer's frozen pass |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (max_length, trainable_layers) in RUNS.items():
        with tempfile.TemporaryDirectory() as workdir:
            r = measure(max_length, trainable_layers, args.sample_steps, workdir)
        prefix = "none: it runs the chapter's loop" if trainable_layers == "all" else f"{r['prefix_minutes']:.1f} min"
        print(f"| {name} | {r['tokens']} | {r['per_step']:.2f} | {r['per_eval_batch']:.2f} "
              f"| {r['chapter_minutes']:.0f} min | {prefix} |", flush=True)


if __name__ == "__main__":
    main()
