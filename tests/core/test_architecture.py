"""The layering in ARCHITECTURE.md, enforced: import-linter's contracts in pyproject.toml.

Contracts: the CLI above flows above tasks; ``kubernetes`` imported only by the adapter
(``tasks.cluster.kube``); pure modules import no adapter, no prefect and nothing that does I/O.
import-linter reads the source statically (grimp), so running it in a subprocess against a
copied tree shows that a deliberate violation is caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([*LINT, str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy_tree(dst: Path) -> Path:
    for d in ("vibecode_cli", "flows", "gateway", "tasks"):
        shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_architecture_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("tasks/core/names.py", "import flows.common", "CLI above flows above tasks"),
    ("vibecode_cli/__init__.py", "from tasks.cluster import kube", "The CLI reaches Kubernetes only through flows"),
    ("flows/workspace.py", "from kubernetes import client", "Only the Kubernetes adapter imports kubernetes"),
    ("tasks/backup/status.py", "import prefect", "Pure modules import no adapter, no prefect, no I/O"),
    ("tasks/people/hr.py", "from tasks.cluster import kube", "Pure modules import no adapter, no prefect, no I/O"),
    ("tasks/cluster/objects.py", "import subprocess", "Pure modules import no adapter, no prefect, no I/O"),
    ("gateway/runs.py", "import flows.onboarding", "CLI above flows above tasks"),
    ("tasks/gateway/scim_map.py", "import prefect", "Pure modules import no adapter, no prefect, no I/O"),
    ("tasks/workspace/status.py", "from tasks.cluster import kube", "Pure modules import no adapter, no prefect, no I/O"),
    ("tasks/deploy/spec.py", "import prefect", "Pure modules import no adapter, no prefect, no I/O"),
])
def test_architecture_test_catches_a_violation(tmp_path, module, line, contract):
    root = _copy_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{line}  # deliberate violation\n")
    res = _lint(root)
    assert res.returncode != 0, res.stdout
    broken = [ln for ln in res.stdout.splitlines() if "BROKEN" in ln]
    assert any(contract in ln for ln in broken), res.stdout
