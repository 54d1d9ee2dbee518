"""Benchmark: the fast trainer's cost against the number of messages (in memory, spilled to disk), GPT-2 small.

    python benchmarks/benchmark_data_size.py                  # 1,494 / 5,572 / ~50,000 messages
    python benchmarks/benchmark_data_size.py --sizes balanced,unbalanced --chapter-steps 4   # a quicker look

Three data sets: the chapter's 1,494 balanced SMS messages; all 5,572 (--no-balance); and ~50,000 made of the
5,572 repeated with small random edits (a word dropped, doubled or swapped with its neighbour, a letter
changed; seeded). One epoch each (batch 8, flexible padding: each batch padded to its longest message, the
last real token read; eval every 50 steps on 5 batches), then the accuracies on every split. GPT-2 small's
shape, random weights (the cost does not depend on the values), fp32.

What runs, per data set, each in its own process (peak memory is that process's ru_maxrss):
- frozen pass: the real ActivationCache.add (embeddings + 11 frozen blocks) on a random sample of
  --frozen-sample messages, timed per token, extrapolated to every message of the set (its cost is linear in
  the tokens: length-sorted chunks of at most 4096 tokens, whatever the set's size);
- fast trainer, in memory and on disk (--cache-memory 0): the real train_classifier_fast and the final
  accuracies (predict_labels_fast on train, validation, test), with the frozen blocks stood in for by random
  activations of the same shape, so everything else runs for real at full size: storing every message in
  memory or writing the file, reading it back in batch order, the trainable top, the evaluations. The first
  --max-steps steps (evaluations included) and --max-batches prediction batches per split are timed, the rest
  of the epoch extrapolated (the cache is full-size from the first step, so each step costs the same);
- the chapter's loop: its first --chapter-steps training steps and its step-0 evaluation, extrapolated.
Fast total = frozen pass (extrapolated) + the measured rest. The table is printed and saved to benchmarks/results/.
"""

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_fast_training as bft

SIZES = {"balanced": "1,494 balanced", "unbalanced": "5,572 unbalanced", "augmented": "~50,000 augmented"}
EMB_DIMS = {"gpt2-small (124M)": 768, "gpt2-medium (355M)": 1024, "gpt2-large (774M)": 1280,
            "gpt2-xl (1558M)": 1600}


def _all_sms():
    """All 5,572 SMS messages (Label as "ham"/"spam", Text), read from the shared zip."""
    import zipfile

    import pandas as pd

    with zipfile.ZipFile(bft.SMS_ZIP) as zf:
        name = next(n for n in zf.namelist() if n.endswith("SMSSpamCollection"))
        text = zf.read(name).decode("utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if "\t" in line]
    return pd.DataFrame(rows, columns=["Label", "Text"]).pipe(lambda df: df.assign(Text=df.Text.map(str)))


def _augment(df, target, seed):
    """df, then edited copies of its rows (one small edit each) until there are `target` rows."""
    import pandas as pd

    rng = random.Random(seed)
    rows = list(zip(df.Label, df.Text))
    out = list(rows)
    while len(out) < target:
        label, text = rows[len(out) % len(rows)]
        out.append((label, _edit(text, rng)))
    return pd.DataFrame(out, columns=["Label", "Text"])


def _edit(text, rng):
    """One small random edit: drop, double or swap a word, or change a letter."""
    words = text.split()
    if len(words) < 2:
        return text + rng.choice("!?.")
    i = rng.randrange(len(words) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        del words[i]
    elif kind == 1:
        words.insert(i, words[i])
    elif kind == 2:
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        w = words[i]
        j = rng.randrange(len(w))
        words[i] = w[:j] + rng.choice("abcdefghijklmnopqrstuvwxyz") + w[j + 1:]
    return " ".join(words)


def data_for(size):
    """(data argument for prepare_spam_splits, balance) of a named size."""
    if size == "augmented":
        return _augment(_all_sms(), 50_000, seed=123), False
    return bft.SMS_ZIP, size == "balanced"


def cache_rows(loaders):
    """Every message's token ids up to its last real token (what the flexible fast trainer caches)."""
    import torch

    from beyond.bonus_training import read_positions

    rows = []
    for loader in loaders:
        for i in range(len(loader.dataset)):
            ids = torch.as_tensor(loader.dataset[i][0])
            rows.append(ids[: int(read_positions(ids[None], "flexible", 50256)[0]) + 1])
    return rows


def run_frozen(size, sample, workdir):
    """The frozen pass on a random sample of the set's messages, timed per token, and the set's token count."""
    from beyond import activation_cache

    data, balance = data_for(size)
    model, _, loaders, _, _ = bft.setup(True, workdir, fast_optimizer=True, data=data, balance=balance)
    rows = cache_rows(loaders)
    picked = random.Random(0).sample(rows, min(sample, len(rows)))
    cache = activation_cache.ActivationCache().bind(model, "cpu")
    cache.add(model, picked, "cpu")
    lengths = [len(r) for r in rows]
    return {"messages": len(rows), "tokens": sum(lengths), "max_tokens": max(lengths),
            "sample_tokens": cache.stats["tokens"], "sample_seconds": cache.stats["seconds"],
            "sample_messages": len(picked), "gflops": cache.gflops(),
            "split_sizes": [len(loader.dataset) for loader in loaders], "train_max_length": loaders[0].dataset.max_length}


def run_loop(size, where, workdir, max_steps, max_batches):
    """The real fast trainer at full size (cache of every message), the frozen blocks stood in for.

    Steps beyond max_steps and prediction batches beyond max_batches per split are extrapolated from the
    measured ones (their cost is the same all epoch long; the cache is full-size from the start).
    """
    import torch

    from beyond import activation_cache, fast_trainer

    data, balance = data_for(size)
    model, optimizer, loaders, _, _ = bft.setup(True, workdir, fast_optimizer=True, data=data, balance=balance)

    def stand_in(self, model, ids):  # the frozen blocks' output shape, without their cost
        self.stats["tokens"] += ids.numel()
        return torch.randn(*ids.shape, self.emb_dim)

    activation_cache.ActivationCache.prefix = stand_in
    token = {"trainable_token_pos": "flexible", "pad_token_id": 50256}
    steps = len(loaders[0])
    cache = activation_cache.ActivationCache(0 if where == "disk" else None, workdir)
    start = time.perf_counter()
    with bft.training_steps() as record:  # the first max_steps batches; the cache still gets every message
        fast_trainer.train_classifier_fast(model, FirstBatches(loaders[0], max_steps), loaders[1], optimizer, "cpu",
                                           1, bft.SETTINGS["eval_freq"], bft.SETTINGS["eval_iter"],
                                           cache=cache, **token)
    marks = [*record["marks"], time.perf_counter()]
    warm = marks[0] - start  # the one pass: every training and validation message into the cache
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1)  # evaluations every 50 steps included
    final = 0.0
    for loader in loaders:
        begin = time.perf_counter()
        fast_trainer._warm_cache(model, cache, [loader.dataset], device="cpu", **token)  # the test set's pass
        batches = min(max_batches, len(loader))
        middle = time.perf_counter()
        fast_trainer.predict_labels_fast(loader, model, "cpu", num_batches=batches, cache=cache, **token)
        final += middle - begin + (time.perf_counter() - middle) / batches * len(loader)
    report = cache.report()
    return {"train_seconds": warm + per_step * steps, "final_seconds": final, "steps": steps,
            "measured_steps": len(marks) - 1, "warm_seconds": warm, "per_step": per_step,
            "memory_bytes": report["memory_bytes"], "disk_bytes": report["disk_bytes"], "budget": cache.memory,
            "peak_mb": bft.peak_memory_mb()}


class FirstBatches:
    """A DataLoader cut to its first n batches (same dataset, same order, same random numbers)."""

    def __init__(self, loader, n):
        self.loader, self.dataset, self.n = loader, loader.dataset, min(n, len(loader))

    def __len__(self):
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def run_chapter(size, steps, workdir):
    """The chapter's loop sampled on this set (1 epoch), extrapolated as benchmark_fast_training does."""
    data, balance = data_for(size)
    return bft.run_chapter_sample(True, steps, workdir, num_epochs=1, data=data, balance=balance)


def subprocess_run(args, timeout=7200):
    """One measurement in a fresh interpreter; returns its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--json", str(out), *args], check=True,
                       timeout=timeout, stdout=sys.stderr)
        return json.loads(out.read_text())


def bytes_table(frozen):
    """What one message costs in the cache, per model size, padding and precision (from the measured sets)."""
    lines = ["| model | emb_dim | padded (bytes per message, fp32 / bf16) | flexible, mean of the set (fp32 / bf16) |",
             "| --- | --- | --- | --- |"]
    for model, emb in EMB_DIMS.items():
        padded = ", ".join(f"{SIZES[s].split()[0]} padded to {f['train_max_length']}: "
                           f"{_kb(f['train_max_length'] * emb * 4)} / {_kb(f['train_max_length'] * emb * 2)}"
                           for s, f in frozen.items())
        flexible = ", ".join(f"{SIZES[s].split()[0]}: {_kb(f['tokens'] / f['messages'] * emb * 4)} / "
                             f"{_kb(f['tokens'] / f['messages'] * emb * 2)}" for s, f in frozen.items())
        lines.append(f"| {model} | {emb} | {padded} | {flexible} |")
    return "\n".join(lines)


def _kb(num_bytes):
    return f"{num_bytes / 1024:.0f} KB"


def report(results, steps):
    """The markdown table: time per epoch and for the whole job, against the number of messages."""
    lines = [("| data | messages | tokens cached | frozen pass s (extrap.) | fast, in memory: loop s / total s "
             "| fast, on disk: loop s / total s | ms per message (memory / disk) | x balanced's | chapter's loop s "
             "(extrap.) | speed-up (memory / disk) | peak RSS MB (memory / disk) | cache in memory / on disk |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = None
    for size, r in results.items():
        f, mem, disk, chap = r["frozen"], r["memory"], r["disk"], r["chapter"]
        frozen_s = f["sample_seconds"] / f["sample_tokens"] * f["tokens"]
        loop = {k: v["train_seconds"] + v["final_seconds"] for k, v in (("memory", mem), ("disk", disk))}
        total = {k: frozen_s + v for k, v in loop.items()}
        per_msg = {k: v / f["messages"] * 1000 for k, v in total.items()}
        base = base or per_msg["memory"]
        chapter_s = chap["train_seconds"] + chap["final_seconds"]
        lines.append(
            f"| {SIZES[size]} | {f['messages']:,} | {f['tokens']:,} | {frozen_s:.0f} | {loop['memory']:.0f} / "
            f"{total['memory']:.0f} | {loop['disk']:.0f} / {total['disk']:.0f} | {per_msg['memory']:.1f} / "
            f"{per_msg['disk']:.1f} | {per_msg['memory'] / base:.2f} / {per_msg['disk'] / base:.2f} | "
            f"{chapter_s:.0f} | {chapter_s / total['memory']:.1f}x / {chapter_s / total['disk']:.1f}x | "
            f"{mem['peak_mb']:.0f} / {disk['peak_mb']:.0f} | {mem['memory_bytes'] / 2**30:.2f} GB (budget "
            f"{mem['budget'] / 2**30:.1f} GB) / {disk['disk_bytes'] / 2**30:.2f} GB |")
    lines += ["", ("The chapter's whole job, 5 epochs (projected from the same measurements: the frozen pass once, "
              "then 5 epochs of measured steps; the chapter's loop 5 epochs of sampled steps and its evaluations):"),
              "", "| data | fast, in memory s | fast, on disk s | chapter's loop s | speed-up (memory / disk) |",
              "| --- | --- | --- | --- | --- |"]
    for size, r in results.items():
        f, chap = r["frozen"], r["chapter"]
        frozen_s = f["sample_seconds"] / f["sample_tokens"] * f["tokens"]
        fast = {k: frozen_s + r[k]["warm_seconds"] + 5 * r[k]["per_step"] * r[k]["steps"] + r[k]["final_seconds"]
                for k in ("memory", "disk")}
        evals = (len(range(0, 5 * chap["steps"], 50)) + 5) * 2 * 5  # evaluate_model + per-epoch accuracies
        chapter = 5 * chap["steps"] * chap["per_step"] + evals * chap["per_eval_batch"] + chap["final_seconds"]
        lines.append(f"| {SIZES[size]} | {fast['memory']:.0f} | {fast['disk']:.0f} | {chapter:.0f} | "
                     f"{chapter / fast['memory']:.1f}x / {chapter / fast['disk']:.1f}x |")
    notes = [f"{SIZES[s]}: frozen blocks at {r['frozen']['gflops']:.0f} GFLOP/s on {r['frozen']['sample_messages']} "
             f"sampled messages ({r['frozen']['sample_tokens']:,} tokens); chapter's loop {r['chapter']['per_step']:.2f}"
             f" s per step ({steps} sampled), {r['chapter']['per_eval_batch']:.2f} s per evaluation batch, "
             f"{r['chapter']['steps']} steps; CPU share (frozen / memory / disk / chapter): "
             + " / ".join(f"{bft.cpu_share(r[k]):.0%}" for k in ("frozen", "memory", "disk", "chapter"))
             for s, r in results.items()]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + bytes_table(
        {s: r["frozen"] for s, r in results.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="balanced,unbalanced,augmented", help="which data sets (default: all)")
    parser.add_argument("--frozen-sample", type=int, default=400, help="messages the frozen pass is timed on")
    parser.add_argument("--chapter-steps", type=int, default=6, help="chapter's loop steps to time per set")
    parser.add_argument("--max-steps", type=int, default=400, help="fast trainer steps timed (the rest extrapolated)")
    parser.add_argument("--max-batches", type=int, default=100,
                        help="prediction batches timed per split for the final accuracies (the rest extrapolated)")
    parser.add_argument("--report", help="print the report of a saved results JSON instead of measuring")
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not bft.SMS_ZIP.exists():
        sys.exit(f"{bft.SMS_ZIP} not found: place the SMS Spam Collection zip there (see README).")
    if args.run:
        import torch

        kind, size = args.run.split(":")[:2]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            if kind == "frozen":
                result = run_frozen(size, args.frozen_sample, workdir)
            elif kind == "chapter":
                result = run_chapter(size, args.chapter_steps, workdir)
            else:
                result = run_loop(size, kind, workdir, args.max_steps, args.max_batches)
        result.update(threads=torch.get_num_threads(), cpu_seconds=bft.cpu_seconds(),
                      child_wall_seconds=time.perf_counter() - start)
        Path(args.json).write_text(json.dumps(result))
        return
    if args.report:
        print(report(json.loads(Path(args.report).read_text()), args.chapter_steps))
        return
    started, load_before = time.time(), os.getloadavg()
    results = {}
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        results[size] = {}
        for kind in ("frozen", "memory", "disk", "chapter"):
            print(f"[benchmark] {size}: {kind} ...", file=sys.stderr, flush=True)
            results[size][kind] = subprocess_run([
                "--run", f"{kind}:{size}", "--frozen-sample", str(args.frozen_sample), "--chapter-steps",
                str(args.chapter_steps), "--max-steps", str(args.max_steps), "--max-batches", str(args.max_batches)])
            partial = bft.REPO / "benchmarks" / "results" / "data_size-partial.json"  # kept should a later run fail
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(results))
    command = "python benchmarks/benchmark_data_size.py " + " ".join(sys.argv[1:])
    text = (f"Command: `{command.strip()}`; {os.cpu_count()} cores; load average before {load_before[0]:.2f}, "
            f"after {os.getloadavg()[0]:.2f}; wall time {time.time() - started:.0f} s.\n\n"
            + report(results, args.chapter_steps) + "\n")
    print(text)
    bft.save_report("data_size", text, results)


if __name__ == "__main__":
    main()
