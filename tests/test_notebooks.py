"""The notebooks: committed without outputs, and each runs top to bottom in offline test mode."""

import copy
import re
import time
from collections import Counter
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds for one cell; a whole notebook should take well under that in test mode
NOTEBOOK_BUDGET = 120  # seconds for two runs of a whole notebook in test mode on 2 cores (issues 3, 19)


def _ids(path):
    return path.name


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {REPO / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; run `nbstripout {path}`"
    # run timings and saved widget state are outputs too (and a widget's state can be megabytes)
    timed = [i for i, cell in enumerate(nb.cells) if "execution" in cell.metadata]
    assert not timed, f"{path.name}: cells {timed} hold execution timings; run `nbstripout {path}`"
    assert "widgets" not in nb.metadata, f"{path.name} holds saved widget state; run `nbstripout {path}`"


# The chapter's code each notebook types into its cells, and the package function its check cell compares with:
# notebook -> [(snippets that must be typed into code cells, the call a check cell right after them makes)].
LESSONS = {
    "02_balance_and_split.ipynb": [
        (["def create_balanced_dataset(df):"], "spam_dataset.create_balanced_dataset("),
        (["def random_split(df, train_frac, validation_frac):"], "spam_dataset.random_split("),
    ],
    "03_tokens_and_padding.ipynb": [
        (["class SpamDataset(Dataset):", "def __getitem__(self, index):"], "spam_dataset.SpamDataset("),
    ],
    "05_classification_head.ipynb": [
        (["param.requires_grad = False", "model.out_head = torch.nn.Linear(",
          "for param in model.trf_blocks[-1].parameters():", "for param in model.final_norm.parameters():"],
         "lesson_setup.classification_model("),
    ],
    "06_fine_tune_and_evaluate.ipynb": [
        (["def calc_accuracy_loader(data_loader, model, device, num_batches=None):"],
         "train_classifier.calc_accuracy_loader("),
        (["def calc_loss_batch(input_batch, target_batch, model, device):"], "train_classifier.calc_loss_batch("),
        (["def calc_loss_loader(data_loader, model, device, num_batches=None):"], "train_classifier.calc_loss_loader("),
        (["def evaluate_model(", "def train_classifier_simple("], "train_classifier.train_classifier_simple"),
    ],
    "07_use_the_classifier.ipynb": [
        (["def classify_review(text, model, tokenizer, device, max_length=None, pad_token_id=50256):"],
         "train_classifier.classify_review("),
    ],
    "10_attack_the_spam_filter.ipynb": [
        (["def my_leetspeak(word):", "def my_homoglyphs(word):"], "attacks.homoglyphs("),
        (["def my_greedy_attack(text, score_fn, budget=BUDGET):"], "attacks.greedy_attack("),
        (["def my_normalise(text):"], "attacks.normalise("),
    ],
}
CHECK_WITHIN = 2  # the check is one of the next code cells after the typed code


def _code_cells(path):
    return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def test_every_lesson_notebook_is_listed():
    assert set(LESSONS) <= {path.name for path in NOTEBOOKS}, "a notebook in LESSONS was renamed or removed"


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_code_is_typed_in_and_checked_against_the_package(name):
    cells = _code_cells(REPO / "notebooks" / name)
    for snippets, check_call in LESSONS[name]:
        found = []
        for snippet in snippets:
            where = [i for i, source in enumerate(cells) if snippet in source]
            assert where, f"{name}: no code cell types in `{snippet}`"
            found.append(where[0])
        last = max(found)
        following = cells[last + 1: last + 1 + CHECK_WITHIN]
        checks = [s for s in following if check_call in s and ("assert" in s or "testing.assert_" in s)]
        assert checks, (f"{name}: none of the {CHECK_WITHIN} code cells after `{snippets[-1]}` asserts that "
                        f"`{check_call}...` gives the same result")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_shows_code_as_code_and_has_a_settings_heading(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        assert "getsource" not in cell.source, f"{path.name}: type the code into a cell instead of getsource"
        assert not re.search(r"\bCode\(", cell.source), f"{path.name}: IPython's Code(...) display; type the code in"
    settings = [i for i, cell in enumerate(nb.cells)
                if cell.cell_type == "code" and "lesson_setup." in cell.source]
    assert settings, f"{path.name} has no settings cell (one lesson_setup call)"
    above = nb.cells[settings[0] - 1]
    assert above.cell_type == "markdown" and above.source.lstrip().startswith("## Settings"), (
        f"{path.name}: the settings cell needs a '## Settings' markdown heading right above it")


def _run_in_test_mode(path, tmp_path, monkeypatch, edit=None, runs=2):
    """Execute a copy of the notebook top to bottom `runs` times in one kernel, offline in test mode.

    Returns (the notebook with each run's outputs, ..., seconds for all runs).
    """
    from nbclient import NotebookClient

    # Run a copy from tmp_path/notebooks/, so the notebook's "../data" and "../outputs" land under tmp_path and
    # the test never writes into the repo. The real SMS archive, when ../shared has it, reaches the kernel
    # through $SMS_SPAM_ZIP (tests/conftest.py).
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    monkeypatch.setenv("TUTORIAL_TEST_MODE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Fail fast instead of waiting on the network should a cell try to download something anyway.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    nb = nbformat.read(path, as_version=4)
    if edit is not None:
        edit(nb)
    notebooks = [nb] + [copy.deepcopy(nb) for _ in range(runs - 1)]
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    with client.setup_kernel():
        for run in notebooks:
            client.nb = run
            for index, cell in enumerate(run.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError, showing the failing cell
    return (*notebooks, time.perf_counter() - start)


def _printed(nb):
    """Everything the code cells printed to stdout."""
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream" and out.get("name") == "stdout")


# Figures that measure time differ between runs; so do progress bars (stderr), which _numbers never reads.
TIMING = re.compile(r"[-+\d.,e]+ ?(?:s|ms|seconds?|minutes?|min|MB/s|GFLOP/s|msg/s|it/s)\b|\d+:\d\d")


def _numbers(cell):
    """The numbers a code cell showed (printed, or in a table or repr), timings left out."""
    texts = [out.get("text", "") for out in cell.outputs if out.output_type == "stream" and out.name == "stdout"]
    texts += [out.data.get("text/html", out.data.get("text/plain", "")) for out in cell.outputs
              if out.output_type in ("display_data", "execute_result")]
    text = TIMING.sub("", "".join(texts))
    text = re.sub(r"0x[0-9a-f]+|id=\"[^\"]*\"|T_[0-9a-f_]+|row\d+_col\d+", "", text)  # object ids, styler ids
    return re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)


def test_numbers_leave_out_timings_written_with_thousands_separators():
    """A speed such as "1,234.5 msg/s" differs between runs; none of its digits may count as a shown number."""
    cell = nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                       text="accuracy 96.67% at 1,234.5 msg/s\n")])
    assert _numbers(cell) == ["96.67"]


FIGURE_CALLS = ("plt.subplots", "plt.show()", "plot_values(", "display(plot_", "display(look_inside.plot_",
                "plot_read_attention(", ".plot.bar(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_twice_in_one_kernel_with_the_same_numbers_and_figures(path, tmp_path, monkeypatch,
                                                                               record_property):
    first, second, seconds = _run_in_test_mode(path, tmp_path, monkeypatch)
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s for two runs in test mode")

    for nb in (first, second):
        errors = [out.ename for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
                  if out.output_type == "error"]
        assert not errors, f"{path.name}: error outputs {errors}"
        assert "Traceback" not in _printed(nb), f"{path.name} printed a traceback:\n{_printed(nb)[-2000:]}"
    if path.name.startswith("06_"):  # the chapter's per-step log is shown, whichever trainer runs
        assert "Ep 1 (Step 000000): Train loss" in _printed(first), "notebook 6 hides the training log"
    # The second run may show less (a result it reuses instead of computing again), never other numbers.
    changed = [i for i, (a, b) in enumerate(zip(first.cells, second.cells))
               if a.cell_type == "code" and Counter(_numbers(b)) - Counter(_numbers(a))]
    assert not changed, (f"{path.name}: cells {changed} show other numbers on the second run, e.g. "
                         f"{_numbers(first.cells[changed[0]])[:20]} then {_numbers(second.cells[changed[0]])[:20]}")
    blank = [i for i, cell in enumerate(first.cells) if cell.cell_type == "code"
             and any(call in cell.source for call in FIGURE_CALLS)
             and not any("image/png" in out.get("data", {}) for out in cell.outputs)]
    assert not blank, f"{path.name}: cells {blank} are meant to draw a figure but show none"
    assert seconds < NOTEBOOK_BUDGET, f"{path.name} took {seconds:.0f} s for two test-mode runs (budget {NOTEBOOK_BUDGET} s)"


def test_notebook_6_runs_the_typed_in_chapter_loop_when_trainer_is_simple(tmp_path, monkeypatch):
    """TRAINER = "simple" trains with the notebook's own train_classifier_simple, and its log is printed."""
    path = REPO / "notebooks" / "06_fine_tune_and_evaluate.ipynb"

    def use_simple(nb):
        cell = next(c for c in nb.cells if c.cell_type == "code" and 'TRAINER = "fast"' in c.source)
        cell.source = cell.source.replace('TRAINER = "fast"', 'TRAINER = "simple"')

    nb, _ = _run_in_test_mode(path, tmp_path, monkeypatch, edit=use_simple, runs=1)
    assert "trainer: simple" in _printed(nb)
    training = next(c for c in nb.cells if c.cell_type == "code" and 'if TRAINER == "simple":' in c.source)
    log = "".join(out.get("text", "") for out in training.outputs if out.output_type == "stream")
    assert "Ep 1 (Step 000000): Train loss" in log and "Training accuracy:" in log, log
    assert "Fast trainer" not in log


def test_notebook_8_has_checks_for_every_exercise_and_skips_slow_runs_by_default():
    cells = _code_cells(REPO / "notebooks" / "08_exercises.ipynb")
    settings = next(s for s in cells if "lesson_setup." in s)
    assert "RUN_SLOW = False" in settings, "the slow exercises must be off by default (RUN_SLOW = False)"
    for exercise in ("6_1", "6_2", "6_3", "loop"):
        check = f"check_exercise_{exercise}("
        definitions = [s for s in cells if f"def {check}" in s]
        assert definitions and "assert " in definitions[0], f"exercise {exercise}: no assert-style check"
        assert any(check in s and f"def {check}" not in s for s in cells), f"no solution cell calls {check}...)"
