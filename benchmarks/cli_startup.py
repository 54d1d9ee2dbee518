"""How long `python train_classifier.py --help` takes, next to `python -c "import torch"` (the floor).

Each command runs in a fresh interpreter, the commands alternate, and the median of --repeats runs is printed.
--compare DIR also times the --help of another checkout (e.g. the code before a change), in the same rounds.

    python benchmarks/cli_startup.py --repeats 7 [--compare ../main]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commands(compare):
    """{name: (argv, PYTHONPATH)} of what is timed."""
    timed = {"python -c 'import torch'": ([sys.executable, "-c", "import torch"], str(REPO)),
             "train_classifier.py --help": ([sys.executable, str(REPO / "train_classifier.py"), "--help"], str(REPO))}
    if compare:
        other = Path(compare).resolve()
        timed[f"--help of {other.name}"] = ([sys.executable, str(other / "train_classifier.py"), "--help"], str(other))
    return timed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compare", help="another checkout whose --help is timed in the same rounds")
    args = parser.parse_args()
    timed = commands(args.compare)
    seconds = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name, (argv, path) in timed.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
            seconds[name].append(time.perf_counter() - start)
    floor = statistics.median(seconds["python -c 'import torch'"])
    print(f"| command | median of {args.repeats} (s) | minus importing torch (s) |")
    print("| --- | --- | --- |")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median - floor:+.2f} |")


if __name__ == "__main__":
    main()
