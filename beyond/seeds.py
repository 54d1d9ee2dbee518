"""The same run over several seeds: how much of a difference between two accuracies is the luck of one seed.

A seed picks the split (which messages are tested) and the new head's first weights; --seed 123 is the
chapter's run. With the fast trainer, five seeds of the chapter's job cost about what one chapter run did.
"""

import argparse
import json
import os
import statistics
import time

from gpt_download import atomic_write


def parse_seeds(text):
    """"123,124,125" -> [123, 124, 125] (the --seeds flag); an argparse error names a bad entry."""
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes whole numbers separated by commas, e.g. 123,124,125; "
                                         f"got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs one or more different seeds, e.g. 123,124,125; got {text!r}")
    return seeds


def summarise(values):
    """{"n", "mean", "sd", "min", "max"} of a list of numbers; sd is the sample standard deviation (None for one)."""
    values = [float(v) for v in values]
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def format_summary(summary, percent=True):
    """"95.13% ± 1.02 (range 93.67-96.33%, 5 seeds)" (percent) or "12.3 ± 0.4 (range 11.9-12.8, 5 seeds)"."""
    scale, unit = (100, "%") if percent else (1, "")
    sd = "n/a" if summary["sd"] is None else f"{summary['sd'] * scale:.2f}"
    return (f"{summary['mean'] * scale:.2f}{unit} ± {sd} (range {summary['min'] * scale:.2f}-"
            f"{summary['max'] * scale:.2f}{unit}, {summary['n']} seed{'s' if summary['n'] != 1 else ''})")


def run_over_seeds(run_one, args, seeds):
    """run_one(args) once per seed (its outputs in output_dir/seed-N), then the summary, also in seeds.json."""
    runs = []
    for seed in seeds:
        print(f"\n=== seed {seed} ===", flush=True)
        seed_args = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None,
                                          "output_dir": os.path.join(args.output_dir, f"seed-{seed}")})
        start = time.time()
        metrics = run_one(seed_args)
        runs.append({"seed": seed, "wall_seconds": time.time() - start,
                     **{key: metrics[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy",
                                                      "training_seconds")}})
    summary = {key: summarise([run[key] for run in runs])
               for key in ("test_accuracy", "val_accuracy", "training_seconds", "wall_seconds")}
    print(f"\nTest accuracy over seeds {','.join(map(str, seeds))}: {format_summary(summary['test_accuracy'])}")
    print(f"Validation accuracy: {format_summary(summary['val_accuracy'])}")
    print(f"Wall time per seed: {format_summary(summary['wall_seconds'], percent=False)} s; all seeds: "
          f"{sum(run['wall_seconds'] for run in runs):.1f} s")
    result = {"seeds": list(seeds), "runs": runs, "summary": summary}
    os.makedirs(args.output_dir, exist_ok=True)
    with atomic_write(os.path.join(args.output_dir, "seeds.json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result
