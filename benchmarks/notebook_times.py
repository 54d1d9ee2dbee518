"""How long each notebook takes in normal mode, its longest cell, and its longest stretch without any output.

    python benchmarks/notebook_times.py              # all ten, in order, as a class would run them
    python benchmarks/notebook_times.py 06 07        # some of them (07, 09, 10 train a quick classifier
                                                     # when 06 has not run before them, 08 its chapter run)
    python benchmarks/notebook_times.py --cells 5    # also each notebook's 5 slowest cells

Normal mode with GPT-2 small's shape and random weights (TUTORIAL_RANDOM_WEIGHTS=1): real weights cannot be
downloaded here, and the cost does not depend on the weights' values, so the times are the ones a class gets
after its downloads. Offline: the SMS data comes from $SMS_SPAM_ZIP (else the synthetic sample, said loudly).
The notebooks run from a copy in a temporary folder, one fresh kernel each, 01 to 10 in order, so 07, 09 and 10
load the classifier 06 saved. Progress bars count as output: a cell is silent only when nothing moves.
Budgets (issue 19): 06 at most 4 minutes, every other at most 3, the series at most 20; each row says pass or
OVER. The first line gives the machine's fp32 and bf16 matmul GFLOP/s (09 and 10 use bf16 where the CPU has bf16
units), so that a table from a busy machine can be told from a quiet one's.
"""

import argparse
import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = {"06": 240}  # every other notebook: 180
SERIES_BUDGET_SECONDS = 20 * 60


class TimedClient(NotebookClient):
    """NotebookClient that notes the time of every cell start and everything a learner sees move: printed text,
    displays and their updates, and widget messages (a notebook's tqdm bar is a widget)."""

    SEEN = ("stream", "display_data", "execute_result", "update_display_data", "clear_output", "comm_open",
            "comm_msg", "error")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []  # (seconds, cell index)
        self.on_cell_start = lambda cell, cell_index: self.events.append((time.perf_counter(), cell_index))

    def process_message(self, msg, cell, cell_index):
        if msg.get("msg_type", msg["header"]["msg_type"]) in self.SEEN:
            self.events.append((time.perf_counter(), cell_index))
        return super().process_message(msg, cell, cell_index)


def matmul_gflops(dtype=torch.float32, size=2048, repeats=5):
    """This machine's matrix-multiply throughput in dtype, for comparing runs on other machines."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def time_notebook(path, workdir, timeout):
    """(wall seconds, {cell index: seconds}, (longest silence's seconds, the cell it fell in))."""
    nb = nbformat.read(path, as_version=4)
    client = TimedClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    cell_seconds = {}
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            began = time.perf_counter()
            client.execute_cell(cell, index)
            cell_seconds[index] = time.perf_counter() - began
            client.events.append((time.perf_counter(), index))
    wall = time.perf_counter() - start
    events = [(start, 0)] + sorted(client.events)
    silence = max(((b[0] - a[0], b[1]) for a, b in itertools.pairwise(events)), default=(0.0, 0))
    return wall, cell_seconds, silence


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook numbers, e.g. 06 07 (default: all)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may take (3600)")
    parser.add_argument("--workdir", type=Path, help="run in this folder and keep it (default: a temporary one); "
                        "then e.g. `09 10` alone reuse the classifier an earlier run's 06 saved there")
    parser.add_argument("--cells", type=int, default=0, metavar="N",
                        help="also list each notebook's N slowest cells (to find where the time goes)")
    args = parser.parse_args(argv)
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in {n.zfill(2) for n in args.notebooks}]
    os.environ.pop("TUTORIAL_TEST_MODE", None)
    os.environ["TUTORIAL_RANDOM_WEIGHTS"] = "1"
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if not os.environ.get("SMS_SPAM_ZIP") and (REPO.parent / "shared/data/sms_spam_collection.zip").is_file():
        os.environ["SMS_SPAM_ZIP"] = str(REPO.parent / "shared/data/sms_spam_collection.zip")
    print(f"GPT-2 small's shape, RANDOM weights, normal mode; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, matmul {matmul_gflops():.0f} GFLOP/s fp32, {matmul_gflops(torch.bfloat16):.0f} GFLOP/s bf16; "
          f"data: {os.environ.get('SMS_SPAM_ZIP') or 'synthetic'}")
    print("| notebook | wall | longest cell | longest stretch without output | budget |\n| --- | --- | --- | --- | --- |")
    total, slowest = 0.0, {}
    with contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "notebooks"
        workdir.mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy(path, workdir / path.name)
            wall, cell_seconds, (silence, silent_cell) = time_notebook(workdir / path.name, workdir, args.timeout)
            total += wall
            budget = BUDGET_SECONDS.get(path.name[:2], 180)
            ranked = sorted(cell_seconds.items(), key=lambda item: -item[1])
            slowest[path.stem] = ranked[: args.cells]
            cell, cell_s = ranked[0] if ranked else (0, 0.0)
            print(f"| {path.stem} | {wall:.0f} s | cell {cell}: {cell_s:.0f} s | {silence:.0f} s (cell {silent_cell}) "
                  f"| {budget} s: {'pass' if wall <= budget else 'OVER'} |", flush=True)
    print(f"series: {total / 60:.1f} minutes (budget {SERIES_BUDGET_SECONDS // 60}): "
          f"{'pass' if total <= SERIES_BUDGET_SECONDS else 'OVER'}")
    for name, ranked in slowest.items():
        if ranked:
            print(f"{name}, slowest cells: " + ", ".join(f"{i}: {s:.1f} s" for i, s in ranked))


if __name__ == "__main__":
    sys.exit(main())
