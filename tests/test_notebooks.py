"""The notebooks: committed without outputs, and each runs top to bottom in offline test mode."""

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds for one cell; a whole notebook should take well under that in test mode
NOTEBOOK_BUDGET = 120  # seconds for a whole notebook in test mode on 2 cores (issue 3)


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
         "experiments.replace_head_and_freeze("),
    ],
    "06_fine_tune_and_evaluate.ipynb": [
        (["logits = outputs[:, -1, :]"], "bonus_training.select_token_logits("),
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
                if cell.cell_type == "code" and "TEST_MODE = is_test_mode()" in cell.source]
    assert settings, f"{path.name} has no settings cell (TEST_MODE = is_test_mode())"
    above = nb.cells[settings[0] - 1]
    assert above.cell_type == "markdown" and above.source.lstrip().startswith("## Settings"), (
        f"{path.name}: the settings cell needs a '## Settings' markdown heading right above it")


def _run_in_test_mode(path, tmp_path, monkeypatch, edit=None):
    """Execute a copy of the notebook in offline test mode; returns (notebook with outputs, seconds, printed)."""
    from nbclient import NotebookClient

    # Run a copy from tmp_path/notebooks/, so the notebook's "../data" and "../gpt2" land under tmp_path and
    # the test never writes into the repo. The modules import from anywhere (editable install), and the real
    # SMS archive, when ../shared has it, reaches the kernel through $SMS_SPAM_ZIP (tests/conftest.py).
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    shutil.copy(path, workdir / path.name)
    monkeypatch.setenv("TUTORIAL_TEST_MODE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Fail fast instead of waiting on the network should a cell try to download something anyway.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    nb = nbformat.read(workdir / path.name, as_version=4)
    if edit is not None:
        edit(nb)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, showing the failing cell, if any cell fails
    seconds = time.perf_counter() - start
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.outputs if out.output_type == "stream")
    return nb, seconds, printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_in_test_mode(path, tmp_path, monkeypatch, record_property):
    nb, seconds, printed = _run_in_test_mode(path, tmp_path, monkeypatch)
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s in test mode")

    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {[e.ename for e in errors]}"
    assert "Traceback" not in printed, f"{path.name} printed a traceback:\n{printed[-2000:]}"
    if path.name.startswith("06_"):  # the chapter's per-step log is shown, whichever trainer runs
        assert "Ep 1 (Step 000000): Train loss" in printed, "notebook 6 hides the training log"
    assert seconds < NOTEBOOK_BUDGET, f"{path.name} took {seconds:.0f} s in test mode (budget {NOTEBOOK_BUDGET} s)"


def test_notebook_6_runs_the_typed_in_chapter_loop_when_trainer_is_simple(tmp_path, monkeypatch):
    """TRAINER = "simple" trains with the notebook's own train_classifier_simple, and its log is printed."""
    path = REPO / "notebooks" / "06_fine_tune_and_evaluate.ipynb"

    def use_simple(nb):
        cell = next(c for c in nb.cells if c.cell_type == "code" and 'TRAINER = "fast"' in c.source)
        cell.source = cell.source.replace('TRAINER = "fast"', 'TRAINER = "simple"')

    nb, _, printed = _run_in_test_mode(path, tmp_path, monkeypatch, edit=use_simple)
    assert "trainer: simple" in printed
    training = next(c for c in nb.cells if c.cell_type == "code" and 'if TRAINER == "simple":' in c.source)
    log = "".join(out.get("text", "") for out in training.outputs if out.output_type == "stream")
    assert "Ep 1 (Step 000000): Train loss" in log and "Training accuracy:" in log, log
    assert "Fast trainer" not in log


def test_notebook_8_has_checks_for_every_exercise_and_skips_slow_runs_by_default():
    cells = _code_cells(REPO / "notebooks" / "08_exercises.ipynb")
    settings = next(s for s in cells if "TEST_MODE = is_test_mode()" in s)
    assert "RUN_SLOW = False" in settings, "the slow exercises must be off by default (RUN_SLOW = False)"
    for exercise in ("6_1", "6_2", "6_3"):
        check = f"check_exercise_{exercise}("
        definitions = [s for s in cells if f"def {check}" in s]
        assert definitions and "assert " in definitions[0], f"exercise {exercise}: no assert-style check"
        assert any(check in s and f"def {check}" not in s for s in cells), f"no solution cell calls {check}...)"
