"""Benchmark: the whole training command (fast trainer, fp32 and bf16) against the chapter's loop, phase by phase.

    python benchmarks/benchmark_fast_training.py              # the issue-21 table (about 6-10 min on 2 idle cores)
    python benchmarks/benchmark_fast_training.py --runs all --classify-n 1000   # also the trainer-only runs and
                                                              # classify timings (much longer)

It first measures the machine's own matrix-product speed (fp32 and bf16). Each "command" run is the whole
`train_classifier.py --weights random` command in a fresh process (cli.main, with the interpreter's start-up
timed apart and added), split into: training (the frozen pass that fills the cache, with its GFLOP/s, and the
trainable top's steps and evaluations), the final accuracies (and the test set's frozen pass inside them),
start-up/data/model, outputs, the interpreter's start-up and the imports (torch, the package) before the run
starts; against the chapter's loop timed in the same run. The goal's speed-up divides every run into the
chapter's own job (padded, last token); the like-for-like one divides into the chapter's loop with the run's
own padding.

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
import contextlib
import itertools
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


def cpu_seconds():
    """This process's CPU time so far (user + system, all threads): with wall time, how much CPU a run got."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_share(result):
    """The share of its threads' cores a run got (1.0: never waiting for a busy machine)."""
    return result["cpu_seconds"] / max(1e-9, result["child_wall_seconds"] * result["threads"])


def peak_memory_mb():
    """This process's peak resident memory in MB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def setup(flexible, workdir, fast_optimizer=False, data=None, balance=True):
    """The chapter's data loaders, a GPT-2-small-shaped classifier with random weights, and its optimizer.

    fast_optimizer: make_optimizer's fused AdamW over the trainable parameters instead of the chapter's AdamW.
    """
    import torch

    import gpt_model
    from beyond import data_loaders, data_splits, fast_trainer, gpt2_tokenizer
    from beyond.experiments import replace_head_and_freeze

    splits = data_splits.prepare_spam_splits(SMS_ZIP if data is None else data, data_dir=workdir, verbose=False,
                                              balance=balance)
    tokenizer = gpt2_tokenizer.get_gpt2_tokenizer()
    loaders = data_loaders.create_data_loaders(splits["train"], splits["validation"], splits["test"], tokenizer,
                                               batch_size=SETTINGS["batch_size"], seed=SETTINGS["seed"],
                                               per_batch_padding=flexible)
    torch.manual_seed(0)
    model = gpt_model.GPTModel(gpt_model.get_model_config("gpt2-small (124M)"))
    torch.manual_seed(SETTINGS["seed"])
    replace_head_and_freeze(model, num_classes=2, trainable_layers="last_block")
    torch.manual_seed(SETTINGS["seed"])
    if fast_optimizer:
        optimizer = fast_trainer.make_optimizer(model, lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"])
    return model, optimizer, loaders, tokenizer, splits


def job_size(loaders, num_epochs=None):
    """Training steps and evaluation batches of the full job (5 epochs with their evaluations, then accuracies)."""
    train_loader, val_loader, test_loader = loaders
    num_epochs = num_epochs or SETTINGS["num_epochs"]
    steps = num_epochs * len(train_loader)
    evaluations = len(range(0, steps, SETTINGS["eval_freq"]))
    eval_iter = SETTINGS["eval_iter"]
    per_eval = min(eval_iter, len(train_loader)) + min(eval_iter, len(val_loader))
    during = evaluations * per_eval + num_epochs * per_eval  # evaluate_model + per-epoch accuracies
    final = len(train_loader) + len(val_loader) + len(test_loader)
    return steps, during, final


@contextlib.contextmanager
def training_steps(stop_after=None):
    """Record each training step's loss and end time: the trainers' F.cross_entropy calls with gradients on.

    stop_after: raise StopSample at the next training step's loss (the chapter's loop, stopped early).
    """
    import torch

    real = torch.nn.functional.cross_entropy
    record = {"losses": [], "marks": []}

    def loss(*args, **kwargs):
        if torch.is_grad_enabled():
            record["marks"].append(time.perf_counter())  # the previous step (and any evaluation) ended here
            if stop_after is not None and len(record["losses"]) >= stop_after:
                raise StopSample
            value = real(*args, **kwargs)
            record["losses"].append(value.item())
            return value
        return real(*args, **kwargs)

    torch.nn.functional.cross_entropy = loss
    try:
        yield record
    finally:
        torch.nn.functional.cross_entropy = real


def run_chapter_sample(flexible, sample_steps, workdir, num_epochs=None, **setup_kwargs):
    """The real train_classifier_simple for sample_steps steps (and its step-0 evaluation), timed."""
    from beyond import bonus_training as tc  # the switch-aware loop: "flexible" is a bonus experiment

    model, optimizer, loaders, _, _ = setup(flexible, workdir, **setup_kwargs)
    token = {"trainable_token_pos": "flexible" if flexible else "last", "pad_token_id": 50256}
    eval_seconds, eval_batches = [], []
    evaluate_model = tc.evaluate_model

    def timed_evaluate(*args, **kwargs):
        start = time.perf_counter()
        result = evaluate_model(*args, **kwargs)
        eval_seconds.append(time.perf_counter() - start)
        eval_batches.append(2 * SETTINGS["eval_iter"])
        return result

    tc.evaluate_model = timed_evaluate  # the loop looks the name up at call time: this times the real function
    try:
        with training_steps(stop_after=sample_steps) as record:
            tc.train_classifier_simple(model, loaders[0], loaders[1], optimizer, "cpu",
                                       num_epochs or SETTINGS["num_epochs"], SETTINGS["eval_freq"],
                                       SETTINGS["eval_iter"], **token)
    except StopSample:
        pass
    finally:
        tc.evaluate_model = evaluate_model
    marks = record["marks"]
    step_seconds = [b - a for a, b in itertools.pairwise(marks)]
    step_seconds[0] -= sum(eval_seconds)  # the step-0 evaluation ran inside the first step's interval
    # the first step pays one-time allocation costs: the steady state is the better guide for 650 steps
    per_step = sum(step_seconds[1:]) / max(1, len(step_seconds) - 1)
    per_eval_batch = sum(eval_seconds) / sum(eval_batches)
    steps, during, final = job_size(loaders, num_epochs)
    return {"losses": record["losses"], "per_step": per_step, "per_eval_batch": per_eval_batch,
            "first_step": step_seconds[0], "train_seconds": steps * per_step + during * per_eval_batch,
            "final_seconds": final * per_eval_batch, "steps": steps, "eval_batches": during,
            "final_batches": final, "peak_mb": peak_memory_mb()}


def run_fast(flexible, precision, workdir):
    """train_classifier_fast on the full job, then the three full accuracies from its cache."""
    from beyond import activation_cache, fast_trainer

    model, optimizer, loaders, _, _ = setup(flexible, workdir, fast_optimizer=True)
    token = {"trainable_token_pos": "flexible" if flexible else "last", "pad_token_id": 50256}
    with activation_cache.ActivationCache() as cache:
        start = time.perf_counter()
        with training_steps() as record:
            result = fast_trainer.train_classifier_fast(model, loaders[0], loaders[1], optimizer, "cpu",
                                                        SETTINGS["num_epochs"], SETTINGS["eval_freq"],
                                                        SETTINGS["eval_iter"], precision=precision, cache=cache,
                                                        **token)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        accs = [fast_trainer.calc_accuracy_loader_fast(loader, model, "cpu", precision=precision, cache=cache,
                                                       **token) for loader in loaders]
        final_seconds = time.perf_counter() - start
        report = cache.report()
    return {"losses": record["losses"], "train_seconds": train_seconds, "final_seconds": final_seconds,
            "accs": accs, "val_losses": result[1], "peak_mb": peak_memory_mb(),
            "optimizer": optimizer_description(optimizer), "cache": report}


def run_command(flexible, precision, workdir):
    """The whole `train_classifier.py` command (random GPT-2 small) in this fresh process, phase by phase.

    cli.main runs here rather than in a subprocess so that each training step's loss can be recorded; the
    interpreter's own start-up is timed apart (`python -c pass`) and added, so "whole" is the command's time.
    """
    start = time.perf_counter()
    from beyond import cli  # what train_classifier.py's __main__ imports (light: cli.main imports the rest)

    out_dir = Path(workdir) / "out"
    argv = ["--data", str(SMS_ZIP), "--data-dir", workdir, "--weights", "random", "--precision", precision,
            "--output-dir", str(out_dir), "--trainable-token-pos", "flexible" if flexible else "last"]
    with training_steps() as record, contextlib.redirect_stdout(sys.stderr):
        if cli.main(argv) != 0:
            raise RuntimeError(f"train_classifier.py {' '.join(argv)} failed")
    inside = time.perf_counter() - start
    metrics = json.loads((out_dir / "metrics.json").read_text())
    # before the run's own clock starts (metrics' total_seconds): imports of torch and the package, parsing
    imports = inside - metrics["total_seconds"]
    interpreter = interpreter_seconds()
    return {"wall_seconds": interpreter + inside, "train_seconds": metrics["training_seconds"],
            "seconds": metrics["seconds"], "total_seconds": metrics["total_seconds"], "cache": metrics["fast_cache"],
            "accs": [metrics[f"{split}_accuracy"] for split in ("train", "val", "test")],
            "losses": record["losses"], "steps": len(record["losses"]),
            "checkpoint_mb": (out_dir / "classifier.pt").stat().st_size / 2**20,
            "command": "python train_classifier.py " + " ".join(argv[4:]),
            "interpreter_seconds": interpreter, "imports_seconds": imports, "peak_mb": peak_memory_mb()}


def interpreter_seconds():
    """Wall seconds of `python -c pass`, best of three: the interpreter's start-up and exit alone."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(dtype_name, m=960, k=768, n=3072, seconds=3.0):
    """The machine's own speed: GFLOP/s of a plain [m,k] x [k,n] matrix product in fp32 or bf16 (best of runs)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    best, end = float("inf"), time.perf_counter() + seconds
    for _ in range(3):
        a @ b  # warm-up: the library picks its kernels
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * m * k * n / best / 1e9


def optimizer_description(optimizer):
    """"fused AdamW" or "AdamW", and over how many of the model's tensors (for the table's notes)."""
    fused = optimizer.defaults.get("fused")
    tensors = sum(len(group["params"]) for group in optimizer.param_groups)
    return f"{'fused ' if fused else ''}AdamW over {tensors} trainable tensors"


def run_classify(n, workdir):
    """classify_review one message at a time, prediction.predict, and prediction.class_probabilities in bf16."""
    import pandas as pd

    import train_classifier as tc
    from beyond import prediction

    model, _, loaders, tokenizer, splits = setup(False, workdir)
    texts = pd.concat([pd.read_csv(splits[name]) for name in ("test", "validation", "train")])["Text"]
    texts = [str(t) for t in texts][:n]
    max_length = loaders[0].dataset.max_length
    out = {"n": len(texts), "max_length": max_length, "seconds": {}, "agree": {}}

    def timed(name, fn):
        start = time.perf_counter()
        labels = fn()
        out["seconds"][name] = time.perf_counter() - start
        return labels

    reference = timed("classify_review, one at a time, fp32", lambda: [
        tc.classify_review(t, model, tokenizer, "cpu", max_length=max_length) for t in texts])
    predicted = timed("prediction.predict (batches of 32), fp32", lambda: prediction.predict(
        texts, model, tokenizer, "cpu", max_length=max_length, label_names=("not spam", "spam")))
    out["agree"]["prediction.predict (batches of 32), fp32"] = sum(
        a == b for a, (b, _) in zip(reference, predicted))
    name = "prediction.class_probabilities (batches of 32), bf16"
    labels = timed(name, lambda: ["spam" if i == 1 else "not spam" for i in prediction.class_probabilities(
        texts, model, tokenizer, "cpu", max_length=max_length, precision="bf16").argmax(dim=-1).tolist()])
    out["agree"][name] = sum(a == b for a, b in zip(reference, labels))
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


RUNS = {  # name: (label, padding)
    "chapter-last": ("chapter's loop (extrapolated)", "120 tokens, last token"),
    "fast-last": ("fast, fp32", "120 tokens, last token"),
    "bf16-last": ("fast, bf16", "120 tokens, last token"),
    "chapter-flexible": ("chapter's loop, flexible (extrapolated)", "per batch, last real token"),
    "fast-flexible": ("fast, flexible, fp32", "per batch, last real token"),
    "bf16-flexible": ("fast, flexible, bf16", "per batch, last real token"),
}


def table(results, sample_steps, classify, machine):
    """The markdown report."""
    lines = [(f"Machine: a plain [960,768] x [768,3072] matrix product runs at {machine['fp32']:.0f} GFLOP/s in fp32 "
             f"and {machine['bf16']:.0f} GFLOP/s in bf16 (best of repeated runs, {machine['threads']} threads)."), "",
             ("| run | padding | seconds: 5 epochs + final accuracies (training / accuracies) | speed-up (chapter's loop, "
              "same padding) | "
              "frozen blocks GFLOP/s | CPU share | peak RSS MB | max rel. per-step loss diff | train / val / test accuracy |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if not any(name in results for name in RUNS if not name.startswith("chapter")):
        lines = lines[:2]  # no trainer-only run: no table for them
    for name, (label, padding) in RUNS.items():
        if name not in results or name.startswith("chapter"):  # the chapter's loop: its lines below
            continue
        r = results[name]
        chapter = results.get("chapter-flexible" if "flexible" in name else "chapter-last")
        total = r["train_seconds"] + r["final_seconds"]
        speed_up = f"{(chapter['train_seconds'] + chapter['final_seconds']) / total:.1f}x" if chapter else "-"
        gflops = f"{r['cache']['frozen_gflops']:.0f}" if r.get("cache") else "-"
        diff = "-"
        if chapter:
            d, n = max_rel_diff(r["losses"], chapter["losses"])
            diff = f"{d:.1e} (first {n} steps)"
        accs = " / ".join(f"{a * 100:.2f}%" for a in r["accs"])
        lines.append(f"| {label} | {padding} | {total:.0f} ({r['train_seconds']:.0f} / {r['final_seconds']:.0f}) "
                     f"| {speed_up} | {gflops} | {cpu_share(r):.0%} | {r['peak_mb']:.0f} | {diff} | {accs} |")
    for name in ("chapter-last", "chapter-flexible"):
        if name in results:
            c = results[name]
            lines += ["", (f"{RUNS[name][0]}: {c['per_step']:.2f} s per training step (mean of steps 2-{sample_steps}; "
                           f"step 1: {c['first_step']:.2f} s), {c['per_eval_batch']:.2f} s per evaluation batch; "
                           f"extrapolated to {c['steps']} steps + {c['eval_batches']} evaluation batches during "
                           f"training + {c['final_batches']} batches of final accuracies.")]
    lines += command_table(results)
    lines += ["", ("CPU share: the run's CPU time over its wall time times its threads; below 100% the machine was "
                   "busy with other work and every figure above is that much slower than on idle cores.")]
    if classify:
        n = classify["n"]
        lines += ["", (f"| classify {n} messages (padded to {classify['max_length']}) | seconds | messages / s | "
                      "same label as classify_review |"), "| --- | --- | --- | --- |"]
        for name, seconds in classify["seconds"].items():
            agree = classify["agree"].get(name, n)
            lines.append(f"| {name} | {seconds:.1f} | {n / seconds:.0f} | {agree} of {n} |")
    return "\n".join(lines)


def command_table(results):
    """The issue's table: each whole command against the chapter's loop in the same run, phase by phase.

    The chapter's command is estimated as its extrapolated training and final accuracies plus the fast
    command's own costs outside them (start-up, outputs), which the chapter's loop would pay as well. The goal's
    column divides into the chapter's own job (padded, last token), the like-for-like one into the chapter's
    loop with the run's padding.
    """
    lines = ["", ("| run | whole command | speed-up vs the chapter's job (padded, last): the goal | like for like "
                  "(chapter's loop, same padding) | training | frozen pass in training (GFLOP/s) | top: steps + "
                  "evaluations (ms per step) | final accuracies (of which frozen pass) | start-up, data, model / "
                  "outputs | interpreter start-up / imports before the run (torch, the package) | max rel. "
                  "per-step loss diff | train / val / test accuracy |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in COMMAND_RUNS:
        if name not in results:
            continue
        r, padding, precision = results[name], *name.split("-")[1:]
        seconds, passes = r["seconds"], r["cache"].get("pass_seconds") or [0.0]
        outside = r["wall_seconds"] - r["train_seconds"] - seconds["final_metrics"]
        goal, like = (_speed_up(results.get(f"chapter-{p}"), outside, r["wall_seconds"]) for p in ("last", padding))
        top = r["train_seconds"] - passes[0]
        # the command's random weights are not setup()'s, so only bf16 against fp32 compares (fp32 against the
        # chapter's loop: tests/test_fast_trainer.py)
        reference = results.get(f"command-{padding}-fp32") if precision == "bf16" else None
        diff = "-"
        if reference:
            d, n = max_rel_diff(r["losses"], reference["losses"])
            diff = f"{d:.1e} vs fp32 ({n} steps)"
        label = f"{precision}, " + ("`--trainable-token-pos flexible`" if padding == "flexible" else "padded, last")
        lines.append(
            f"| {label} | {r['wall_seconds']:.1f} s | {goal} | {like} | {r['train_seconds']:.1f} s | {passes[0]:.1f} s "
            f"({r['cache'].get('frozen_gflops', 0):.0f}) | {top:.1f} s ({top / r['steps'] * 1000:.1f}) | "
            f"{seconds['final_metrics']:.1f} s ({sum(passes[1:]):.1f} s) | {seconds['start_up_data_and_model']:.1f} s"
            f" / {seconds['outputs']:.1f} s | {r['interpreter_seconds']:.2f} s / {r['imports_seconds']:.2f} s | "
            f"{diff} | {' / '.join(f'{a * 100:.2f}%' for a in r['accs'])} |")
    for name in COMMAND_RUNS:
        if name in results:
            lines += ["", f"`{name}`: `{results[name]['command']}`."]
            break
    return lines


def _speed_up(chapter, outside, wall_seconds):
    """The chapter's job (its extrapolated loop plus the command's costs outside it) over a run's whole command."""
    if not chapter:
        return "-"
    return f"{(chapter['train_seconds'] + chapter['final_seconds'] + outside) / wall_seconds:.1f}x"


COMMAND_RUNS = ("command-flexible-bf16", "command-last-bf16", "command-flexible-fp32", "command-last-fp32")
ALL_RUNS = (*RUNS, *COMMAND_RUNS)
ISSUE_RUNS = ("chapter-last", "chapter-flexible", *COMMAND_RUNS)  # the default: the issue's table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-steps", type=int, default=12, help="chapter's loop steps to time (default 12)")
    parser.add_argument("--classify-n", type=int, default=0, help="messages for classify timing (default 0: skip)")
    parser.add_argument("--runs", default=",".join(ISSUE_RUNS),
                        help=f"comma-separated runs out of {', '.join(ALL_RUNS)}, or all (default: "
                             f"{', '.join(ISSUE_RUNS)})")
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not SMS_ZIP.exists():
        sys.exit(f"{SMS_ZIP} not found: place the SMS Spam Collection zip there (see README).")
    if args.run:  # a child process: one measurement
        return child(args)

    runs = list(ALL_RUNS) if args.runs == "all" else [name.strip() for name in args.runs.split(",") if name.strip()]
    unknown = sorted(set(runs) - set(ALL_RUNS))
    if unknown:
        sys.exit(f"unknown runs {', '.join(unknown)}; choose from {', '.join(ALL_RUNS)}")
    started, load_before = time.time(), os.getloadavg()
    machine = subprocess_run(["--run", "matmul-machine"], timeout=600)
    results = {}
    for name in runs:
        print(f"[benchmark] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = subprocess_run(["--run", name, "--sample-steps", str(args.sample_steps)], timeout=7200)
        except subprocess.CalledProcessError as err:
            print(f"[benchmark] {name} failed ({err}); left out of the table", file=sys.stderr)
    classify = None
    if args.classify_n:
        print("[benchmark] classify ...", file=sys.stderr, flush=True)
        classify = subprocess_run(["--run", "classify-last", "--classify-n", str(args.classify_n)], timeout=7200)
    command = "python benchmarks/benchmark_fast_training.py " + " ".join(sys.argv[1:])
    header = (f"Command: `{command.strip()}`; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch threads {machine['threads']}; load average before {load_before[0]:.2f}, "
              f"after {os.getloadavg()[0]:.2f}; benchmark wall time {time.time() - started:.0f} s; "
              "GPT-2 small shape, random weights (accuracies are those of an untrained trunk); peak memory is "
              "resource.getrusage ru_maxrss of each run's own process.")
    report = header + "\n\n" + table(results, args.sample_steps, classify, machine) + "\n"
    print(report)
    save_report("fast_training", report, {"results": results, "classify": classify, "machine": machine})


def child(args):
    """One measurement in this (fresh) process; its result goes to the --json file."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        kind, padding, *precision = args.run.split("-")
        flexible = padding == "flexible"
        if kind == "matmul":
            result = {name: matmul_gflops(name) for name in ("fp32", "bf16")}
        elif kind == "chapter":
            result = run_chapter_sample(flexible, args.sample_steps, workdir)
        elif kind == "classify":
            result = run_classify(args.classify_n, workdir)
        elif kind == "command":
            result = run_command(flexible, precision[0], workdir)
        else:
            result = run_fast(flexible, "bf16" if kind == "bf16" else "fp32", workdir)
    import torch  # after the run: a command run times its own imports

    result.update(threads=torch.get_num_threads(), cpu_seconds=cpu_seconds(),
                  child_wall_seconds=time.perf_counter() - start)
    Path(args.json).write_text(json.dumps(result))


def save_report(name, report, data):
    """benchmarks/results/<name>-<time>.md and .json (git-ignored), each written whole or not at all."""
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix, text in ((".md", report), (".json", json.dumps(data))):
        path = out_dir / f"{name}-{stamp}{suffix}"
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    print(f"saved to {out_dir}/{name}-{stamp}.md")


if __name__ == "__main__":
    main()
