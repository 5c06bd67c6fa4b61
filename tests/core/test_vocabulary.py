"""One vocabulary: every label and annotation key of the platform is defined in tasks/core/names.py.

A key typed out in a second module drifts (a renamed label that one reader still selects on
finds nothing, silently), so the product code (flows, tasks, gateway, vibecode_cli) is read
as source: a string literal holding a ``vibecode.dev/...`` or ``app.kubernetes.io/...`` key
anywhere but names.py fails. Docstrings and comments may name keys (they explain; they do
not select). The charts' templates are YAML and spell the keys out by necessity.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.core import names

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("flows", "tasks", "gateway", "vibecode_cli")
HOME = "tasks/core/names.py"
KEY = re.compile(r"(?<![\w.-])(vibecode\.dev|app\.kubernetes\.io)/[a-z0-9]")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are statements (docstrings, bare strings)."""
    return {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}


def typed_out_keys(root: Path) -> list[str]:
    found = []
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == HOME or "__pycache__" in rel:
                continue
            tree = ast.parse(path.read_text(), rel)
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                        and KEY.search(node.value)):
                    found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_label_or_annotation_key_is_typed_out_outside_names():
    assert typed_out_keys(ROOT) == []


@pytest.mark.parametrize("source, caught", [
    ('LABEL = "vibecode.dev/user"\n', True),
    ('SEL = f"app.kubernetes.io/part-of={x}"\n', True),
    ('labels = {"app.kubernetes.io/component": "backup"}\n', True),
    ('def f(d):\n    return d.get("vibecode.dev/restoring")\n', True),
    ('"""Reads ``vibecode.dev/user``."""\nURL = "https://alice.vibecode.dev"\n', False),
    ('EMAIL = "ops@vibecode.dev"\nFROM = names.USER_LABEL\n', False),
])
def test_the_vocabulary_check_catches_a_typed_out_key(tmp_path, source, caught):
    for top in PRODUCT:
        (tmp_path / top).mkdir()
    (tmp_path / "tasks" / "mod.py").write_text(source)
    assert bool(typed_out_keys(tmp_path)) is caught


def test_every_key_in_names_is_a_valid_kubernetes_key_and_none_is_defined_twice():
    keys = {k: v for k, v in vars(names).items()
            if k.isupper() and isinstance(v, str) and KEY.match(v) and "=" not in v and "," not in v}
    assert len(keys) > 20  # the vocabulary is really read from the module
    qualified = re.compile(r"[a-z0-9.-]{1,253}/[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
    bad = [k for k, v in keys.items() if not qualified.fullmatch(v) and not v.endswith("-")]
    assert bad == []
    by_value: dict[str, set[str]] = {}
    for k, v in keys.items():
        by_value.setdefault(v, set()).add(k)
    # An alias is one object under two names; two literals with one value would be a copy.
    source = (ROOT / HOME).read_text()
    twice = [v for v in by_value if source.count(f'"{v}"') > 1]
    assert twice == []
