"""The workspace image's spec and root filesystem plan (tasks/image/spec.py), pure: the repository's
own spec parses, bad specs are refused naming the field, and the plan sets up what a person meets
first (a trusted folder, our start page, a word about the assistant's key) without building."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tasks.core.errors import InvalidInput
from tasks.image.build import load_inputs
from tasks.image.spec import (
    ENTRYPOINT,
    KEY_ENV,
    differences,
    dpkg_packages,
    package_list,
    parse_settings,
    parse_spec,
    rootfs_plan,
)
from tasks.platform.lock import load_lock

ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = ROOT / "images" / "workspace"
pytestmark = pytest.mark.unit


def spec_data() -> dict:
    return yaml.safe_load((SPEC_DIR / "spec.yaml").read_text())


def test_the_repository_spec_declares_what_people_need():
    spec = parse_spec((SPEC_DIR / "spec.yaml").read_text())
    assert {"git", "curl", "ca-certificates", "python3", "python3-pip", "python3-venv",
            "build-essential"} <= set(spec.debian.packages)
    npm = {p.name: p for p in spec.npm}
    assert {"code-server", "npm", "@anthropic-ai/claude-code"} <= set(npm)
    assert npm["@anthropic-ai/claude-code"].bin == ["claude"]
    assert spec.user.uid >= 1000
    assert "--disable-workspace-trust" in spec.code_server.flags
    settings = parse_settings((SPEC_DIR / spec.code_server.settings).read_text())
    assert settings["security.workspace.trust.enabled"] is False
    assert settings["workbench.startupEditor"] == "readme"  # the template's README, not another product's page


def test_the_lock_pins_the_built_image_by_digest():
    """The lock's ``code-server`` entry (the workspaces' image) is this spec's image, built here
    (not pulled), by digest, and the settings' default names it."""
    from tasks.core.settings import WorkspaceSettings
    from tasks.platform.lock import pinned_for

    spec = parse_spec((SPEC_DIR / "spec.yaml").read_text())
    lock = load_lock()
    pin = lock.image("code-server")
    assert pin.image == spec.reference == WorkspaceSettings().image and pin.component == "workspace"
    assert pin.build and "images/workspace" in pin.build
    assert pinned_for(lock, "code-server", spec.reference) == f"{spec.reference}@{pin.digest}"
    assert pin.digest and re.match(r"^sha256:[0-9a-f]{64}$", pin.digest)


@pytest.mark.parametrize("path,value,field", [
    (("schema",), 2, "schema"),
    (("name",), "Vibecode/Workspace:1", "name"),
    (("node", "version"), "^24", "node.version"),
    (("npm",), [{"name": "npm", "version": "11.6.2"}], "npm"),
    (("npm", 0, "version"), "latest", "npm.0.version"),
    (("debian", "packages"), ["git", "rm -rf /"], "debian.packages"),
    (("user", "uid"), 0, "user.uid"),
    (("code_server", "flags"), ["--auth=none"], "code_server.flags"),
    (("code_server", "flags"), ["; curl evil"], "code_server.flags"),
    (("surprise",), 1, "surprise"),
])
def test_a_bad_spec_is_refused_naming_the_field(path, value, field):
    data = spec_data()
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(InvalidInput) as exc:
        parse_spec(yaml.safe_dump(data))
    assert exc.value.field == field


def test_not_yaml_and_not_json_are_invalid_input():
    with pytest.raises(InvalidInput):
        parse_spec("a: [")
    with pytest.raises(InvalidInput):
        parse_settings("[1]")


def plan_of(**kw):
    spec = parse_spec((SPEC_DIR / "spec.yaml").read_text())
    return spec, rootfs_plan(spec, {"security.workspace.trust.enabled": False}, kw.get("ext", ["a.b-1.0.vsix"]),
                             kw.get("template", {"README.md": "hi"}))


def test_the_plan_runs_non_root_through_the_entrypoint_with_the_image_flags():
    spec, plan = plan_of()
    assert plan.user == "1000:1000" and plan.entrypoint == (ENTRYPOINT,)
    assert "HOME=/home/coder" in plan.env
    entry = next(f for f in plan.files if f.path == ENTRYPOINT)
    assert entry.mode == 0o755
    last = entry.content.strip().splitlines()[-1]
    argv = shlex.split(last)
    assert argv[:2] == ["exec", "code-server"] and argv[-1] == "$@"
    assert "--disable-workspace-trust" in argv
    assert argv[argv.index("--app-name") + 1] == "VibeCode"
    # Machine settings every start; User settings and the template only once, never clobbering.
    assert 'cp /usr/lib/vibecode/defaults/settings.json "$data/Machine/settings.json"' in entry.content
    assert '[ -e "$data/User/settings.json" ] ||' in entry.content
    assert "cp -Rn" in entry.content
    assert ("/etc/passwd", "coder:x:1000:1000:coder:/home/coder:/bin/bash\n") in plan.appends
    assert "/workspace" in plan.owned_dirs and "/home/coder" in plan.owned_dirs
    # every declared command is linked from the package's own .bin
    links = dict(plan.links)
    assert links["/usr/local/bin/claude"].endswith("/node_modules/.bin/claude")
    assert links["/usr/local/bin/code-server"].startswith("/usr/lib/vibecode/npm/code-server@4.139.1/")


def test_without_a_key_the_workspace_says_how_to_get_one_and_holds_none():
    _, plan = plan_of()
    note = next(f for f in plan.files if f.path == "/etc/vibecode/assistant.txt").content
    assert KEY_ENV in note and "VIBECODE_WORKSPACE__ASSISTANT_SECRET" in note and "claude" in note
    bashrc = dict(plan.appends)["/etc/bash.bashrc"]
    assert f'-z "${{{KEY_ENV}:-}}"' in bashrc and "assistant.txt" in bashrc
    assert not any(re.search(r"sk-ant-", f.content) for f in plan.files)


@pytest.mark.parametrize("ext", [["../x.vsix"], ["x.zip"], ["a b.vsix"]])
def test_extension_names_are_checked(ext):
    with pytest.raises(InvalidInput) as exc:
        plan_of(ext=ext)
    assert exc.value.field == "code_server.extensions"


def test_template_files_stay_inside_the_template():
    with pytest.raises(InvalidInput) as exc:
        plan_of(template={"../../etc/passwd": "x"})
    assert exc.value.field == "template"


def test_the_repository_folder_loads(tmp_path):
    (tmp_path / "x.vsix").write_bytes(b"PK")
    inputs = load_inputs(SPEC_DIR, [tmp_path])
    assert "x.vsix" in inputs.plan.extensions
    assert any(f.path.endswith("/template/README.md") for f in inputs.plan.files)
    assert json.loads(next(f.content for f in inputs.plan.files if f.path.endswith("defaults/settings.json")))


STATUS = """Package: git
Status: install ok installed
Architecture: amd64
Version: 1:2.39.5-0+deb12u2

Package: gone
Status: deinstall ok config-files
Version: 1

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9
"""


def test_dpkg_status_gives_installed_packages_with_versions():
    assert dpkg_packages(STATUS) == {"git": "1:2.39.5-0+deb12u2", "libc6:i386": "2.36-9"}
    text = package_list("r:1", "sha256:x", {"git": "1"}, {"code-server": "4.139.1"}, {"me.ext": "0.0.1"})
    assert text.splitlines()[2:] == ["npm code-server 4.139.1", "vsix me.ext 0.0.1", "deb git 1"]


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=3)),
       st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=3)))
def test_differences_are_empty_exactly_when_the_builds_are_equal(a, b):
    diff = differences(a, b)
    assert (diff == []) == (a == b)
    assert differences(a, a) == []
