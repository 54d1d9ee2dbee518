"""The notebooks: committed without outputs, and each runs top to bottom in offline test mode."""

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_in_test_mode(path, tmp_path, monkeypatch, record_property):
    from nbclient import NotebookClient

    # Run a copy from tmp_path/notebooks/, so the notebook's "../data" and "../gpt2" land under tmp_path and
    # the test never writes into the repo. The modules import from anywhere (editable install), and
    # find_shared_sms_zip() locates ../shared from the package, not from the working directory.
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
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, showing the failing cell, if any cell fails
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s in test mode")

    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {[e.ename for e in errors]}"
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.outputs if out.output_type == "stream")
    assert "Traceback" not in printed, f"{path.name} printed a traceback:\n{printed[-2000:]}"
    assert seconds < NOTEBOOK_BUDGET, f"{path.name} took {seconds:.0f} s in test mode (budget {NOTEBOOK_BUDGET} s)"
