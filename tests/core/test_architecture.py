"""The layering in ARCHITECTURE.md, enforced: import-linter's contracts in pyproject.toml.

Contracts: the CLI above flows above tasks; domains above cluster above core; ``kubernetes``
imported only by the adapter (``tasks.cluster.kube``); every module of tasks/ has one role
(pure: no adapter, no prefect, no I/O; adapter: no steps, no flows; steps: no flows), flows
reach the world only through steps, the gateway imports no flow. import-linter reads the
source statically (grimp), so running it in a subprocess against a copied tree shows that a
deliberate violation is caught. A module in no role contract fails here too: a new module
must say what it is.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
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


@pytest.mark.slow  # lint-imports in a subprocess per case; scripts/test runs lint-imports itself first
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
    ("tasks/backup/plan.py", "from tasks.backup import steps", "Pure modules import no adapter, no prefect, no I/O"),
    ("tasks/people/usersdb.py", "import tasks.people.ledger", "Pure modules import no adapter, no prefect, no I/O"),
    ("tasks/backup/status.py", "import tasks.people.record", "Domains above cluster above core"),
    ("tasks/core/names.py", "import tasks.cluster.objects", "Domains above cluster above core"),
    ("tasks/health/checks.py", "import tasks.reaper.decide", "Domains above cluster above core"),
    ("tasks/people/ledger.py", "import prefect", "Adapters import no steps, no flows"),
    ("tasks/cluster/helm.py", "from tasks.workspace import steps", "Adapters import no steps, no flows"),
    ("tasks/reaper/steps.py", "from tasks.people import steps", "Steps of one domain are independent"),
    ("tasks/backup/steps.py", "import flows.backup", "Steps import no flows, no gateway, no CLI"),
    ("flows/workspace.py", "from tasks.cluster import helm", "Flows reach the cluster and the outside world"),
    ("flows/reaper.py", "import httpx", "Flows reach the cluster and the outside world"),
    ("gateway/scim.py", "from tasks.people import steps", "The HR gateway starts flows by name"),
])
def test_architecture_test_catches_a_violation(tmp_path, module, line, contract):
    root = _copy_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{line}  # deliberate violation\n")
    res = _lint(root)
    assert res.returncode != 0, res.stdout
    broken = [ln for ln in res.stdout.splitlines() if "BROKEN" in ln]
    assert any(contract in ln for ln in broken), res.stdout


# -- every module has a role ---------------------------------------------------------------------
ROLES = {  # contract name prefix -> the role its source modules have
    "Pure modules": "pure", "Adapters": "adapter", "Steps import no flows": "steps",
    "Flows reach": "flow", "The HR gateway": "gateway", "The CLI reaches": "cli",
}


def _modules(root: Path) -> list[str]:
    """Every module of the product packages; an empty ``__init__`` only marks a package."""
    found = []
    for top in ("vibecode_cli", "flows", "gateway", "tasks"):
        for path in sorted((root / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                body = ast.parse(path.read_text()).body
                if all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body):
                    continue  # a docstring at most
                parts = parts[:-1]
            found.append(".".join(parts))
    return found


def _matches(expression: str, module: str) -> bool:
    """import-linter's module expressions: ``*`` one name, ``**`` one or more."""
    pattern = re.escape(expression).replace(r"\*\*", "[^.]+(?:\\.[^.]+)*").replace(r"\*", "[^.]+")
    return re.fullmatch(pattern, module) is not None


def unclassified(root: Path) -> list[str]:
    contracts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    roles: dict[str, set[str]] = {}
    for module in _modules(root):
        for contract in contracts:
            role = next((r for prefix, r in ROLES.items() if contract["name"].startswith(prefix)), None)
            if role and any(_matches(e, module) for e in contract.get("source_modules", [])):
                roles.setdefault(module, set()).add(role)
    problems = []
    for module in _modules(root):
        got = roles.get(module, set())
        if module.startswith("tasks.") and len(got) != 1:
            problems.append(f"{module}: {'no role' if not got else 'roles ' + ', '.join(sorted(got))} "
                            "(list it in exactly one of the pure, adapter and steps contracts)")
        elif not module.startswith("tasks.") and not got:
            problems.append(f"{module}: in no contract of its package")
    return problems


def test_every_module_is_in_a_role_contract():
    assert unclassified(ROOT) == []


@pytest.mark.parametrize("new_file, expected", [
    ("tasks/backup/newthing.py", "tasks.backup.newthing: no role"),
    ("tasks/people/identity/scim.py", "tasks.people.identity.scim: no role"),
    ("tasks/reaper/more_steps.py", "tasks.reaper.more_steps: no role"),
])
def test_a_module_in_no_role_contract_is_caught(tmp_path, new_file, expected):
    root = _copy_tree(tmp_path)
    (root / new_file).write_text('"""A new module that says nothing of its role."""\n')
    assert any(expected in p for p in unclassified(root))


def test_a_module_in_two_roles_is_caught(tmp_path):
    root = _copy_tree(tmp_path)
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace('\n  "tasks.reaper.probe",\n',
                                                             '\n  "tasks.reaper.probe", "tasks.reaper.decide",\n', 1))
    assert any("tasks.reaper.decide: roles adapter, pure" in p for p in unclassified(root))


@pytest.mark.parametrize("expression, module, matches", [
    ("tasks.*.steps", "tasks.backup.steps", True),
    ("tasks.*.steps", "tasks.people.identity.steps", False),
    ("flows.**", "flows.backup", True),
    ("tasks.cluster.localnode.**", "tasks.cluster.localnode.envtest", True),
    ("tasks.cluster.localnode.**", "tasks.cluster.localnode", False),
    ("tasks.core.names", "tasks.core.names", True),
    ("tasks.core.names", "tasks.core.namesx", False),
])
def test_module_expressions_match_as_import_linter_reads_them(expression, module, matches):
    assert _matches(expression, module) is matches
