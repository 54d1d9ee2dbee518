"""The layout's one rule: the chapter's four modules never import the package beyond the chapter."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTER_MODULES = ("gpt_model", "gpt_download", "spam_dataset", "train_classifier")


def _is_main_guard(node):
    """`if __name__ == "__main__":`, the one place a chapter module may hand over to the command line."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imported_names(path):
    """Every module name an `import` or `from ... import` in the file names, at any depth, outside the main guard."""
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not _is_main_guard(node)]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_top_level_holds_the_chapters_four_modules_only():
    assert sorted(p.stem for p in REPO.glob("*.py")) == sorted(CHAPTER_MODULES)


@pytest.mark.parametrize("module", CHAPTER_MODULES)
def test_a_chapter_module_never_imports_the_package_beyond_it(module):
    beyond = {name for name in imported_names(REPO / f"{module}.py") if name.split(".")[0] == "beyond"}
    assert not beyond, f"{module}.py imports {sorted(beyond)}: the chapter's code must not depend on the package"


def test_the_rule_catches_a_chapter_module_that_imports_the_package(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def main():\n    from beyond import cli\n")
    assert "beyond" in imported_names(bad)


def test_importing_the_chapters_modules_loads_nothing_of_the_package():
    code = ("import sys, gpt_model, gpt_download, spam_dataset, train_classifier; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'beyond'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
