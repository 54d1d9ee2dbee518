"""Benchmark: train_classifier_fast against the chapter's loop on the real SMS data, GPT-2-small shape.

    python benchmarks/benchmark_fast_training.py                 # everything, about 10 minutes on 2 idle cores
    python benchmarks/benchmark_fast_training.py --sample-steps 6 --classify-n 200 --no-bf16   # a quicker look

The chapter's settings: batch 8, padded to 120 tokens, 5 epochs, eval_freq 50, eval_iter 5, AdamW lr 5e-5,
weight decay 0.1, seed 123, last block + final LayerNorm + the new head trainable. The weights are random
(GPT-2 small's shape): the cost does not depend on their values, and no download is needed. The chapter's loop
runs with the chapter's optimizer, torch.optim.AdamW(model.parameters(), ...); the fast runs with
train_classifier.make_optimizer, the same AdamW update over the trainable parameters, fused where PyTorch can.

The chapter's loop is timed on its first --sample-steps training steps and the evaluation at step 0 (the real
train_classifier_simple, stopped early), then extrapolated to the full job; the fast trainer runs the full job.
Each run is its own subprocess, so "peak memory" (resource.getrusage ru_maxrss) is that run's alone.
The table is printed and saved to benchmarks/results/ (git-ignored).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SMS_ZIP = REPO.parent / "shared" / "data" / "sms_spam_collection.zip"
SETTINGS = {"batch_size": 8, "num_epochs": 5, "eval_freq": 50, "eval_iter": 5, "lr": 5e-5, "weight_decay": 0.1,
            "seed": 123}


class StopSample(Exception):
    """Raised from the progress callback to stop the chapter's loop after the sampled steps."""


def peak_memory_mb():
    """This process's peak resident memory in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def setup(flexible, workdir, fast_optimizer=False):
    """The chapter's data loaders, a GPT-2-small-shaped classifier with random weights, and its optimizer.

    fast_optimizer: make_optimizer's fused AdamW over the trainable parameters instead of the chapter's AdamW.
    """
    import torch

    import fast_trainer
    import gpt_download
    import gpt_model
    import spam_dataset
    import train_classifier as tc

    splits = spam_dataset.prepare_spam_splits(SMS_ZIP, data_dir=workdir, verbose=False)
    tokenizer = gpt_download.get_gpt2_tokenizer()
    loaders = spam_dataset.create_data_loaders(splits["train"], splits["validation"], splits["test"], tokenizer,
                                               batch_size=SETTINGS["batch_size"], seed=SETTINGS["seed"],
                                               per_batch_padding=flexible)
    torch.manual_seed(0)
    model = gpt_model.GPTModel(gpt_model.get_model_config("gpt2-small (124M)"))
    torch.manual_seed(SETTINGS["seed"])
    tc.replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block")
    torch.manual_seed(SETTINGS["seed"])
    if fast_optimizer:
        optimizer = fast_trainer.make_optimizer(model, lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"])
    return model, optimizer, loaders, tokenizer, splits


def job_size(loaders):
    """Training steps and evaluation batches of the full job (5 epochs with their evaluations, then accuracies)."""
    train_loader, val_loader, test_loader = loaders
    steps = SETTINGS["num_epochs"] * len(train_loader)
    evaluations = len(range(0, steps, SETTINGS["eval_freq"]))
    eval_iter = SETTINGS["eval_iter"]
    per_eval = min(eval_iter, len(train_loader)) + min(eval_iter, len(val_loader))
    during = evaluations * per_eval + SETTINGS["num_epochs"] * per_eval  # evaluate_model + per-epoch accuracies
    final = len(train_loader) + len(val_loader) + len(test_loader)
    return steps, during, final


def run_chapter_sample(flexible, sample_steps, workdir):
    """The real train_classifier_simple for sample_steps steps (and its step-0 evaluation), timed."""
    import train_classifier as tc

    model, optimizer, loaders, _, _ = setup(flexible, workdir)
    token = {"trainable_token_pos": "flexible" if flexible else "last", "pad_token_id": 50256}
    marks, losses, eval_seconds, eval_batches = [], [], [], []
    evaluate_model = tc.evaluate_model

    def timed_evaluate(*args, **kwargs):
        start = time.perf_counter()
        result = evaluate_model(*args, **kwargs)
        eval_seconds.append(time.perf_counter() - start)
        eval_batches.append(2 * SETTINGS["eval_iter"])
        return result

    def progress(state):
        marks.append(time.perf_counter())
        losses.append(state["loss"])
        if len(losses) == sample_steps:
            raise StopSample

    tc.evaluate_model = timed_evaluate  # the loop looks the name up at call time: this times the real function
    start = time.perf_counter()
    try:
        tc.train_classifier_simple(model, loaders[0], loaders[1], optimizer, "cpu", SETTINGS["num_epochs"],
                                   SETTINGS["eval_freq"], SETTINGS["eval_iter"], progress=progress, **token)
    except StopSample:
        pass
    finally:
        tc.evaluate_model = evaluate_model
    step_seconds = [b - a for a, b in zip([start, *marks[:-1]], marks)]
    step_seconds[0] -= sum(eval_seconds)  # the step-0 evaluation ran inside the first step's interval
    # the first step pays one-time allocation costs: the steady state is the better guide for 650 steps
    per_step = sum(step_seconds[1:]) / max(1, len(step_seconds) - 1)
    per_eval_batch = sum(eval_seconds) / sum(eval_batches)
    steps, during, final = job_size(loaders)
    return {"losses": losses, "per_step": per_step, "per_eval_batch": per_eval_batch, "first_step": step_seconds[0],
            "train_seconds": steps * per_step + during * per_eval_batch, "final_seconds": final * per_eval_batch,
            "steps": steps, "eval_batches": during, "final_batches": final, "peak_mb": peak_memory_mb()}


def run_fast(flexible, precision, workdir):
    """train_classifier_fast on the full job, then the three full accuracies from its cache."""
    import fast_trainer

    model, optimizer, loaders, _, _ = setup(flexible, workdir, fast_optimizer=True)
    token = {"trainable_token_pos": "flexible" if flexible else "last", "pad_token_id": 50256}
    losses = []
    start = time.perf_counter()
    result = fast_trainer.train_classifier_fast(model, loaders[0], loaders[1], optimizer, "cpu", SETTINGS["num_epochs"],
                                      SETTINGS["eval_freq"], SETTINGS["eval_iter"], precision=precision,
                                      progress=lambda state: losses.append(state["loss"]), **token)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    accs = [fast_trainer.calc_accuracy_loader_fast(loader, model, "cpu", precision=precision, **token) for loader in loaders]
    final_seconds = time.perf_counter() - start
    return {"losses": losses, "train_seconds": train_seconds, "final_seconds": final_seconds, "accs": accs,
            "val_losses": result[1], "peak_mb": peak_memory_mb(), "optimizer": optimizer_description(optimizer)}


def optimizer_description(optimizer):
    """"fused AdamW" or "AdamW", and over how many of the model's tensors (for the table's notes)."""
    fused = optimizer.defaults.get("fused")
    tensors = sum(len(group["params"]) for group in optimizer.param_groups)
    return f"{'fused ' if fused else ''}AdamW over {tensors} trainable tensors"


def run_classify(n, workdir):
    """classify_review one message at a time against classify_reviews_fast, on n real messages."""
    import pandas as pd

    import fast_trainer
    import train_classifier as tc

    model, _, loaders, tokenizer, splits = setup(False, workdir)
    texts = pd.concat([pd.read_csv(splits[name]) for name in ("test", "validation", "train")])["Text"]
    texts = [str(t) for t in texts][:n]
    max_length = loaders[0].dataset.max_length
    out = {"n": len(texts), "max_length": max_length}
    start = time.perf_counter()
    one_by_one = [tc.classify_review(t, model, tokenizer, "cpu", max_length=max_length) for t in texts]
    out["classify_review"] = time.perf_counter() - start
    start = time.perf_counter()
    batched = fast_trainer.classify_reviews_fast(texts, model, tokenizer, "cpu", max_length=max_length)
    out["classify_reviews_fast"] = time.perf_counter() - start
    out["same_answers"] = batched == one_by_one
    start = time.perf_counter()
    fast_trainer.classify_reviews_fast(texts, model, tokenizer, "cpu", max_length=max_length, trainable_token_pos="flexible")
    out["classify_reviews_fast_flexible"] = time.perf_counter() - start
    out["peak_mb"] = peak_memory_mb()
    return out


def subprocess_run(args, timeout):
    """Run one measurement in a fresh interpreter and return its JSON result (its stdout goes to ours)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--json", str(out), *args]
        subprocess.run(cmd, check=True, timeout=timeout, stdout=sys.stderr)
        return json.loads(out.read_text())


def max_rel_diff(a, b):
    n = min(len(a), len(b))
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a[:n], b[:n])), n


def table(results, sample_steps, classify):
    """The markdown report."""
    chapter = results["chapter-last"]
    base = chapter["train_seconds"] + chapter["final_seconds"]
    lines = [
        ("| run | padding | seconds: 5 epochs + final accuracies (training / accuracies) | speed-up | "
         "peak RSS MB | max rel. per-step loss diff | train / val / test accuracy |"),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in (("chapter-last", "chapter's loop (extrapolated)"), ("fast-last", "fast, fp32"),
                        ("bf16-last", "fast, bf16"), ("chapter-flexible", "chapter's loop, flexible (extrap.)"),
                        ("fast-flexible", "fast, flexible, fp32"), ("bf16-flexible", "fast, flexible, bf16")):
        if name not in results:
            continue
        r = results[name]
        padding = "per batch, last real token" if "flexible" in name else "120 tokens, last token"
        total = r["train_seconds"] + r["final_seconds"]
        if name.startswith("chapter"):
            diff, accs = "(reference)", "not run in full"
        else:
            ref = results["chapter-flexible" if "flexible" in name else "chapter-last"]
            d, n = max_rel_diff(r["losses"], ref["losses"])
            diff = f"{d:.1e} (first {n} steps)"
            accs = " / ".join(f"{a * 100:.2f}%" for a in r["accs"])
        lines.append(f"| {label} | {padding} | {total:.0f} ({r['train_seconds']:.0f} / {r['final_seconds']:.0f}) "
                     f"| {base / total:.1f}x | {r['peak_mb']:.0f} | {diff} | {accs} |")
    lines += ["", (f"Chapter's loop: {chapter['per_step']:.2f} s per training step (mean of steps 2-{sample_steps}; "
                   f"step 1: {chapter['first_step']:.2f} s), {chapter['per_eval_batch']:.2f} s per evaluation batch "
                   f"(the step-0 evaluation, {2 * SETTINGS['eval_iter']} batches); extrapolated to "
                   f"{chapter['steps']} steps + {chapter['eval_batches']} evaluation batches during training + "
                   f"{chapter['final_batches']} batches of final accuracies (train, validation, test).")]
    fast_optimizers = sorted({r["optimizer"] for name, r in results.items()
                              if not name.startswith("chapter") and "optimizer" in r})
    lines.append("Optimizers: the chapter's loop, the chapter's torch.optim.AdamW(model.parameters(), lr=5e-5, "
                 "weight_decay=0.1); the fast rows, train_classifier.make_optimizer ("
                 + ", ".join(fast_optimizers) + "): the same AdamW update, "
                 + ("fused into one kernel" if all(o.startswith("fused") for o in fast_optimizers)
                    else "not fused here (PyTorch offers no fused AdamW for this device)")
                 + ", and skipping the frozen parameters, which get no gradient and so no update in the chapter's "
                 "either.")
    if "chapter-flexible" in results:
        c = results["chapter-flexible"]
        lines.append(f"Chapter's loop with flexible padding: {c['per_step']:.2f} s per step, "
                     f"{c['per_eval_batch']:.2f} s per evaluation batch.")
    if classify:
        n = classify["n"]
        lines += ["", "| classify {} messages (padded to {}) | seconds | messages / s |".format(n, classify["max_length"]),
                  "| --- | --- | --- |"]
        for key in ("classify_review", "classify_reviews_fast", "classify_reviews_fast_flexible"):
            label = {"classify_review": "classify_review, one at a time",
                     "classify_reviews_fast": "classify_reviews_fast (batched; same answers: "
                                              f"{classify['same_answers']})",
                     "classify_reviews_fast_flexible": "classify_reviews_fast, flexible (last real token)"}[key]
            lines.append(f"| {label} | {classify[key]:.1f} | {n / classify[key]:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-steps", type=int, default=12, help="chapter's loop steps to time (default 12)")
    parser.add_argument("--classify-n", type=int, default=1000, help="messages for classify timing (0: skip)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 runs")
    parser.add_argument("--no-flexible", action="store_true", help="skip the flexible-padding runs")
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not SMS_ZIP.exists():
        sys.exit(f"{SMS_ZIP} not found: place the SMS Spam Collection zip there (see README).")

    if args.run:  # a child process: one measurement
        import torch

        with tempfile.TemporaryDirectory() as workdir:
            kind, padding = args.run.split("-")
            flexible = padding == "flexible"
            if kind == "chapter":
                result = run_chapter_sample(flexible, args.sample_steps, workdir)
            elif kind == "classify":
                result = run_classify(args.classify_n, workdir)
            else:
                result = run_fast(flexible, "bf16" if kind == "bf16" else "fp32", workdir)
        result["threads"] = torch.get_num_threads()
        Path(args.json).write_text(json.dumps(result))
        return

    runs = ["chapter-last", "fast-last"]
    runs += [] if args.no_bf16 else ["bf16-last"]
    if not args.no_flexible:
        runs += ["chapter-flexible", "fast-flexible"] + ([] if args.no_bf16 else ["bf16-flexible"])
    results, started = {}, time.time()
    load_before = os.getloadavg()
    for name in runs:
        print(f"[benchmark] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = subprocess_run(["--run", name, "--sample-steps", str(args.sample_steps)], timeout=7200)
        except subprocess.CalledProcessError as err:
            if name in ("chapter-last", "fast-last"):
                raise
            print(f"[benchmark] {name} failed ({err}); left out of the table", file=sys.stderr)
    classify = None
    if args.classify_n:
        print("[benchmark] classify ...", file=sys.stderr, flush=True)
        classify = subprocess_run(["--run", "classify-last", "--classify-n", str(args.classify_n)], timeout=7200)
    command = "python benchmarks/benchmark_fast_training.py " + " ".join(sys.argv[1:])
    header = (f"Command: `{command.strip()}`; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch threads {results['fast-last']['threads']}; load average before {load_before[0]:.2f}, "
              f"after {os.getloadavg()[0]:.2f}; benchmark wall time {time.time() - started:.0f} s; "
              "GPT-2 small shape, random weights (accuracies are those of an untrained trunk); peak memory is "
              "resource.getrusage ru_maxrss of each run's own process.")
    report = header + "\n\n" + table(results, args.sample_steps, classify) + "\n"
    print(report)
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix, text in ((".md", report), (".json", json.dumps({"results": results, "classify": classify}))):
        path = out_dir / f"fast_training-{stamp}{suffix}"
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    print(f"saved to {out_dir}/fast_training-{stamp}.md")


if __name__ == "__main__":
    main()
