"""The test tree's own rules, so a newcomer finds the test of a feature and its helpers:

- every test module sits in a domain folder (tests/<domain>/test_*.py, a package);
- shared fixtures and helpers live in tests/fixtures/, and no test module imports another
  test module (a test module that doubles as a fixture library hides where things are);
- one ``free_port`` in the repository (tasks/cluster/localnode/envtest.py).

The checks read the source (ast), and each is shown to catch a violation in a made-up tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FREE_PORT_HOME = "tasks/cluster/localnode/envtest.py"
SOURCE_DIRS = ("flows", "tasks", "gateway", "vibecode_cli", "tests", "benchmarks", "scripts")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layout_violations(root: Path) -> list[str]:
    """Every breach of the rules above under ``root`` (a repository checkout)."""
    tests = root / "tests"
    found: list[str] = []
    for path in sorted(tests.rglob("*.py")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts:
            continue
        folder = path.parent
        if folder != tests and not (folder / "__init__.py").exists():
            found.append(f"{rel.parent}: no __init__.py (test folders are packages)")
        if path.name.startswith("test_"):
            if folder == tests or folder.name == "fixtures":
                found.append(f"{rel}: a test module belongs in a domain folder, tests/<domain>/")
        for name in _imported_modules(path):
            if any(part.startswith("test_") for part in name.split(".")) and name.startswith("tests."):
                found.append(f"{rel}: imports the test module {name} (move what it shares to tests/fixtures/)")
    for path in sorted(p for top in SOURCE_DIRS for p in (root / top).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel or rel == FREE_PORT_HOME:
            continue
        tree = ast.parse(path.read_text(), rel)
        if any(isinstance(n, ast.FunctionDef) and n.name.lstrip("_") == "free_port" for n in ast.walk(tree)):
            found.append(f"{rel}: a copy of free_port (use {FREE_PORT_HOME})")
    return found


def test_the_test_tree_follows_its_rules():
    assert layout_violations(ROOT) == []


@pytest.mark.parametrize("files, expected", [
    ({"tests/test_flat.py": ""}, "belongs in a domain folder"),
    ({"tests/people/test_a.py": "from tests.people.test_b import helper\n", "tests/people/test_b.py": ""},
     "imports the test module tests.people.test_b"),
    ({"tests/people/test_a.py": "import tests.backup.test_flow\n"}, "imports the test module"),
    ({"tests/fixtures/test_helpers.py": ""}, "belongs in a domain folder"),
    ({"tests/extra/test_x.py": ""}, "no __init__.py"),
    ({"tests/fixtures/ports.py": "def free_port():\n    return 0\n"}, "a copy of free_port"),
    ({"benchmarks/b.py": "def _free_port():\n    return 0\n"}, "a copy of free_port"),
])
def test_the_layout_check_catches_a_violation(tmp_path, files, expected):
    for d in ("tests", "tests/people", "tests/fixtures"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        if d != "tests":
            (tmp_path / d / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = layout_violations(tmp_path)
    assert any(expected in v for v in found), found


def test_the_layout_check_accepts_a_tree_that_follows_the_rules(tmp_path):
    for rel, text in {"tests/people/__init__.py": "", "tests/fixtures/__init__.py": "",
                      "tests/fixtures/people.py": "HIRE = {}\n",
                      "tests/people/test_a.py": "from tests.fixtures.people import HIRE\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert layout_violations(tmp_path) == []
