"""The workspace image as data: its spec (``images/workspace/spec.yaml``) and the plan of its root
filesystem, both pure.

The builder (:mod:`tasks.image.build`) only carries a :class:`Plan` out: it makes the Debian
base, installs the npm packages, and then writes exactly the files, links and folders the plan
lists. Everything a person sees first (the entrypoint that seeds their settings and workspace
template, the terminal's word about the assistant's key, the code-server flags) is decided
here, so it is tested without building anything.

Why each choice:
- The entrypoint writes code-server's *Machine* settings at every start (they are the
  platform's: a trusted workspace folder, our start page) and seeds the *User* settings only
  once, so what a person changes stays theirs.
- Extensions are ``.vsix`` files kept in the image and installed into the person's extensions
  volume at start, once per file (a marker named by its sha256): the chart mounts that volume
  over ``~/.local/share/code-server``, so anything unpacked there at build time would be hidden.
- The assistant's key is an environment variable the chart sets from a Secret only when one is
  configured; the image never holds one, and says how to get one when it is missing.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from tasks.core.errors import InvalidInput

KEY_ENV = "ANTHROPIC_API_KEY"
APP_ROOT = "/usr/lib/vibecode"  # node, the npm packages, the image's extensions and defaults
NODE = f"{APP_ROOT}/node/bin/node"
EXTENSIONS = f"{APP_ROOT}/extensions"
DEFAULTS = f"{APP_ROOT}/defaults"
ENTRYPOINT = "/usr/local/bin/vibecode-workspace"
WORKSPACE = "/workspace"
PATH = "/usr/local/bin:/usr/bin:/bin"
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.-]+)?$")
NPM_NAME_RE = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*$")
DEB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
REPO_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")


def _exact(v: str) -> str:
    if not VERSION_RE.match(v):
        raise ValueError(f"{v!r} is not an exact version (x.y.z): a range would build a different image tomorrow")
    return v


class Debian(BaseModel):
    model_config = {"extra": "forbid"}
    suite: str = Field(pattern=r"^[a-z]+$")
    packages: list[str]

    @field_validator("packages")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not DEB_NAME_RE.match(p)]
        if bad:
            raise ValueError(f"not Debian package names: {bad}")
        return sorted(set(v))


class NodePin(BaseModel):
    model_config = {"extra": "forbid"}
    package: str
    version: str
    _v = field_validator("version")(classmethod(lambda cls, v: _exact(v)))


class NpmPackage(BaseModel):
    model_config = {"extra": "forbid"}
    name: str
    version: str
    bin: list[str] = Field(default_factory=list, description="the package's commands, linked into /usr/local/bin")
    _v = field_validator("version")(classmethod(lambda cls, v: _exact(v)))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NPM_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not an npm package name")
        return v

    @property
    def folder(self) -> str:
        """Where it lives in the image: /usr/lib/vibecode/npm/<name>@<version>."""
        return f"{APP_ROOT}/npm/{self.name.replace('/', '+')}@{self.version}"


class User(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(pattern=r"^[a-z_][a-z0-9_-]*$")
    uid: int = Field(ge=1000, le=65533, description="non-root; Pod Security 'restricted' runs it as such")
    home: str = Field(pattern=r"^/[A-Za-z0-9/_.-]+$")
    shell: str = "/bin/bash"


class CodeServer(BaseModel):
    model_config = {"extra": "forbid"}
    app_name: str = Field(min_length=1, max_length=40)
    welcome_text: str = Field(max_length=300)
    flags: list[str]
    settings: str
    extensions: str

    @field_validator("flags")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not re.match(r"^--[a-z][a-z-]*(=\S+)?$", f)]
        if bad:
            raise ValueError(f"not code-server flags: {bad}")
        if any(f.startswith(("--auth", "--bind-addr", "--password")) for f in v):
            raise ValueError("--auth, --bind-addr and --password belong to the chart, not the image")
        return v


class ImageSpec(BaseModel):
    model_config = {"extra": "forbid"}
    schema_: int = Field(alias="schema")
    name: str
    revision: int = Field(ge=1)
    debian: Debian
    node: NodePin
    npm: list[NpmPackage]
    user: User
    code_server: CodeServer
    template: str

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"schema {v}: this builder reads schema 1")
        return v

    @field_validator("name")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not REPO_RE.match(v):
            raise ValueError(f"{v!r}: a repository name (registry/path, lower case, no tag)")
        return v

    @field_validator("npm")
    @classmethod
    def _npm(cls, v: list[NpmPackage]) -> list[NpmPackage]:
        names = {p.name for p in v}
        if "code-server" not in names:
            raise ValueError("the npm packages must include code-server")
        commands = [c for p in v for c in p.bin]
        if len(commands) != len(set(commands)):
            raise ValueError(f"two packages provide the same command: {commands}")
        return v

    def package(self, name: str) -> NpmPackage | None:
        return next((p for p in self.npm if p.name == name), None)

    @property
    def code_server_version(self) -> str:
        pkg = self.package("code-server")
        assert pkg is not None  # the validator requires it
        return pkg.version

    @property
    def tag(self) -> str:
        """<code-server version>-<revision>: what the editor is, and which build of ours."""
        return f"{self.code_server_version}-{self.revision}"

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_spec(text: str) -> ImageSpec:
    """The spec from YAML text; a bad one is InvalidInput naming the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput("spec", f"not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("spec", "must be a mapping")
    try:
        return ImageSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        raise InvalidInput(where, err["msg"].removeprefix("Value error, ")) from None


def parse_settings(text: str) -> dict[str, Any]:
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("code_server.settings", f"not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise InvalidInput("code_server.settings", "must be a JSON object")
    return settings


# -- the plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class File:
    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Plan:
    """What the builder writes over the Debian base, and the image's configuration."""

    reference: str
    files: tuple[File, ...]
    appends: tuple[tuple[str, str], ...]  # (path, text) added to a file of the Debian base
    links: tuple[tuple[str, str], ...]  # (path, target)
    owned_dirs: tuple[str, ...]  # folders owned by the workspace user
    extensions: tuple[str, ...]  # .vsix file names copied into EXTENSIONS
    user: str
    entrypoint: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    labels: dict[str, str] = field(default_factory=dict)


def _entry_script(spec: ImageSpec) -> str:
    cs = spec.code_server
    flags = " ".join(shlex.quote(f) for f in [*cs.flags, "--app-name", cs.app_name, "--welcome-text", cs.welcome_text])
    return f"""#!/bin/sh
# The workspace's first process (images/workspace/spec.yaml, tasks/image/spec.py): prepares
# what the volumes hide, then runs code-server with the image's flags and the chart's arguments.
set -eu
data="${{XDG_DATA_HOME:-$HOME/.local/share}}/code-server"
ws="${{VIBECODE_WORKSPACE_DIR:-{WORKSPACE}}}"
mkdir -p "$data/Machine" "$data/User" "$data/extensions" "$data/.vibecode-vsix"
# The platform's settings, every start: the folder is trusted, the start page is ours.
cp {DEFAULTS}/settings.json "$data/Machine/settings.json"
# The person's settings: seeded once, theirs afterwards.
[ -e "$data/User/settings.json" ] || cp {DEFAULTS}/settings.json "$data/User/settings.json"
# The workspace template, once, never over the person's files.
if [ -d "$ws" ] && [ -w "$ws" ] && [ ! -e "$ws/.vibecode-template" ]; then
  cp -Rn {DEFAULTS}/template/. "$ws/" 2>/dev/null || true
  : > "$ws/.vibecode-template"
fi
# The image's extensions (.vsix), each installed once into the person's extensions volume.
for vsix in {EXTENSIONS}/*.vsix; do
  [ -e "$vsix" ] || continue
  mark="$data/.vibecode-vsix/$(sha256sum "$vsix" | cut -c1-64)"
  [ -e "$mark" ] && continue
  if code-server --extensions-dir "$data/extensions" --install-extension "$vsix" >&2; then
    : > "$mark"
  else
    echo "vibecode-workspace: could not install $vsix (skipped)" >&2
  fi
done
if [ -z "${{{KEY_ENV}:-}}" ]; then
  echo "vibecode-workspace: the AI assistant has no key ({KEY_ENV} unset): see /etc/vibecode/assistant.txt" >&2
fi
exec code-server --extensions-dir "$data/extensions" {flags} "$@"
"""


def assistant_note(spec: ImageSpec) -> str:
    return f"""The AI assistant (`claude`) has no key in this workspace: {KEY_ENV} is not set.

- Your platform operator sets one for every workspace: a Secret in the workspaces' namespace
  holding the key (e.g. `kubectl -n <namespace> create secret generic vibecode-assistant
  --from-literal={KEY_ENV}=...`) and VIBECODE_WORKSPACE__ASSISTANT_SECRET=vibecode-assistant in
  VibeCode Ops' settings; workspaces get it when they next start.
- Or sign in yourself: run `claude` in this terminal and follow its login prompt.
"""


def _bashrc() -> str:
    return f"""
# VibeCode: say once per terminal when the AI assistant has no key.
if [ -n "$PS1" ] && [ -z "${{{KEY_ENV}:-}}" ] && [ -r /etc/vibecode/assistant.txt ]; then
  cat /etc/vibecode/assistant.txt
fi
"""


def rootfs_plan(spec: ImageSpec, settings: dict[str, Any], extensions: list[str], template: dict[str, str]) -> Plan:
    """The plan for ``spec``. ``extensions``: .vsix file names; ``template``: relative path -> text."""
    bad = [e for e in extensions if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.vsix$", e)]
    if bad:
        raise InvalidInput("code_server.extensions", f"not .vsix file names: {bad}")
    u = spec.user
    appends = (("/etc/passwd", f"{u.name}:x:{u.uid}:{u.uid}:{u.name}:{u.home}:{u.shell}\n"),
               ("/etc/group", f"{u.name}:x:{u.uid}:\n"),
               ("/etc/bash.bashrc", _bashrc()))
    files = [
        File(ENTRYPOINT, _entry_script(spec), 0o755),
        File(f"{DEFAULTS}/settings.json", json.dumps(settings, indent=2, sort_keys=True) + "\n"),
        File("/etc/vibecode/assistant.txt", assistant_note(spec)),
    ]
    for rel, text in sorted(template.items()):
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise InvalidInput("template", f"{rel!r} leaves the template folder")
        files.append(File(f"{DEFAULTS}/template/{p}", text))
    links = [(f"{APP_ROOT}/node", f"npm/{spec.node.package}@{spec.node.version}/node_modules/{spec.node.package}")]
    for pkg in spec.npm:
        for command in sorted(pkg.bin):
            links.append((f"/usr/local/bin/{command}", f"{pkg.folder}/node_modules/.bin/{command}"))
    links.append(("/usr/local/bin/node", NODE))
    return Plan(
        reference=spec.reference,
        files=tuple(files),
        appends=appends,
        links=tuple(links),
        owned_dirs=(u.home, f"{u.home}/.local", f"{u.home}/.local/share", f"{u.home}/.config", WORKSPACE),
        extensions=tuple(sorted(extensions)),
        user=f"{u.uid}:{u.uid}",
        entrypoint=(ENTRYPOINT,),
        env=(f"PATH={PATH}", f"HOME={u.home}", f"USER={u.name}", f"SHELL={u.shell}", "LANG=C.UTF-8"),
        workdir=u.home,
        labels={"org.opencontainers.image.title": "VibeCode workspace",
                "org.opencontainers.image.version": spec.tag,
                "dev.vibecode.code-server": spec.code_server_version},
    )


# -- what is inside ------------------------------------------------------------------------
def dpkg_packages(status: str) -> dict[str, str]:
    """name -> version of every installed package in a dpkg ``status`` file."""
    out: dict[str, str] = {}
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            arch = fields.get("Architecture", "")
            name = fields["Package"] + (f":{arch}" if arch not in ("", "all", "amd64") else "")
            out[name] = fields.get("Version", "")
    return dict(sorted(out.items()))


def package_list(reference: str, digest: str, debian: dict[str, str], npm: dict[str, str],
                 extensions: dict[str, str]) -> str:
    """The text written beside the image: one ``kind name version`` line per thing inside."""
    lines = [f"# {reference}@{digest}", "# kind name version"]
    lines += [f"npm {n} {v}" for n, v in sorted(npm.items())]
    lines += [f"vsix {n} {v}" for n, v in sorted(extensions.items())]
    lines += [f"deb {n} {v}" for n, v in debian.items()]
    return "\n".join(lines) + "\n"


def differences(first: dict[str, str], second: dict[str, str]) -> list[str]:
    """Paths whose content hash differs between two builds' file lists (path -> sha256)."""
    out = [f"only in the first: {p}" for p in sorted(first.keys() - second.keys())]
    out += [f"only in the second: {p}" for p in sorted(second.keys() - first.keys())]
    out += [f"differs: {p}" for p in sorted(first.keys() & second.keys()) if first[p] != second[p]]
    return out
