"""Build the workspace image (``images/workspace``) into an OCI image, without Docker.

Steps, each cached under ``~/.cache/vibecode/image`` by exactly what goes into it:

1. The Debian base: ``mmdebstrap`` (Debian's own tool) makes a root filesystem of the spec's
   suite and packages from the machine's apt sources, as a tar, with SOURCE_DATE_EPOCH set.
2. Node.js and the npm packages, each ``npm install``-ed at its exact version into its own
   folder (code-server's is the one scripts/setup-codeserver.sh installs: its native modules
   are built there against this Node).
3. Assembly (:func:`tasks.image.spec.rootfs_plan`): the base unpacked, the npm folders copied
   in, the plan's files, links and owned folders written, the ``.vsix`` files checked by
   installing each with code-server into a scratch folder, setuid/setgid bits stripped.
4. Packing (:mod:`tasks.image.oci`): one deterministic layer, the digest, an archive
   ``ctr images import`` names, and beside them ``digest``, ``packages.txt`` (every Debian
   package, npm package and extension with its version) and ``build.json``.

The same cached inputs give the same digest (what ``vibecode image build`` twice shows). A
first build on another day may not: the Debian mirror serves that day's versions (packages.txt
names them) and npm resolves the packages' own dependencies anew. Adapter: runs the tools.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tasks.core.errors import InvalidInput, PermanentError
from tasks.image import oci
from tasks.image.spec import (
    APP_ROOT,
    EXTENSIONS,
    ImageSpec,
    Plan,
    dpkg_packages,
    package_list,
    parse_settings,
    parse_spec,
    rootfs_plan,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = ROOT / "images" / "workspace"
CACHE = Path(os.environ.get("VIBECODE_CACHE", Path.home() / ".cache" / "vibecode")) / "image"
RECIPE = "3"  # bump when this builder changes what it makes from the same inputs
# What a workspace never reads: manuals, docs (copyrights kept), translations.
DPKG_EXCLUDES = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
                 "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*",
                 "path-exclude=/usr/share/info/*")


def log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


@dataclass
class Inputs:
    spec: ImageSpec
    plan: Plan
    folder: Path
    vsix: dict[str, Path]  # file name -> where it is

    def key(self, base_key: str) -> str:
        h = hashlib.sha256(RECIPE.encode() + base_key.encode())
        for p in sorted(self.folder.rglob("*")):
            if p.is_file() and p.suffix != ".vsix":
                h.update(str(p.relative_to(self.folder)).encode() + p.read_bytes())
        for name, p in sorted(self.vsix.items()):
            h.update(name.encode() + p.read_bytes())
        return h.hexdigest()[:16]


@dataclass
class BuildResult:
    reference: str
    digest: str
    out: Path
    layout: Path
    archive: Path
    packages: Path
    seconds: dict[str, float] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)
    setuid_stripped: list[str] = field(default_factory=list)
    from_cache: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # declared but not installable here

    @property
    def tag(self) -> str:
        return self.reference.rpartition(":")[2]

    @classmethod
    def from_json(cls, data: dict) -> BuildResult:
        paths = {k: Path(data[k]) for k in ("out", "layout", "archive", "packages")}
        return cls(**{**data, **paths})

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def load_inputs(folder: Path = SPEC_DIR, extra_extensions: list[Path] | None = None) -> Inputs:
    folder = Path(folder)
    if not (folder / "spec.yaml").is_file():
        raise InvalidInput("spec", f"{folder}/spec.yaml does not exist")
    spec = parse_spec((folder / "spec.yaml").read_text())
    settings_file = folder / spec.code_server.settings
    if not settings_file.is_file():
        raise InvalidInput("code_server.settings", f"{settings_file} does not exist")
    settings = parse_settings(settings_file.read_text())
    vsix = {p.name: p for d in [folder / spec.code_server.extensions, *(extra_extensions or [])]
            for p in sorted(Path(d).glob("*.vsix"))}
    template_dir = folder / spec.template
    template = {str(p.relative_to(template_dir)): p.read_text() for p in sorted(template_dir.rglob("*")) if p.is_file()}
    return Inputs(spec, rootfs_plan(spec, settings, list(vsix), template), folder, vsix)


# -- 1. the Debian base ------------------------------------------------------------------
def debian_base(spec: ImageSpec, sources: list[str]) -> tuple[Path, bool]:
    """(the base's tar, whether it came from the cache)."""
    key = hashlib.sha256(json.dumps([RECIPE, spec.debian.suite, spec.debian.packages, DPKG_EXCLUDES]).encode())
    out = CACHE / "debian" / f"{spec.debian.suite}-{key.hexdigest()[:16]}.tar"
    if out.exists():
        return out, True
    if not shutil.which("mmdebstrap"):
        raise PermanentError("mmdebstrap is missing: apt-get install mmdebstrap (scripts/setup-node.sh does)")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.tar")
    log(f"Debian {spec.debian.suite} with {len(spec.debian.packages)} packages (mmdebstrap; minutes, once)")
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--format=tar", "--quiet",
            f"--include={','.join(spec.debian.packages)}",
            *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
            # Nothing of apt's run stays in the image: lists and caches differ from day to day.
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/* \"$1\"/var/cache/ldconfig/aux-cache",
            "--customize-hook=find \"$1\"/var/log -type f -exec truncate -s0 {} +",
            "--customize-hook=rm -f \"$1\"/etc/machine-id \"$1\"/var/lib/dbus/machine-id",
            spec.debian.suite, str(partial), *sources]
    proc = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, "SOURCE_DATE_EPOCH": str(oci.EPOCH)})
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise PermanentError(f"mmdebstrap failed: {proc.stderr[-2000:]}")
    partial.rename(out)
    return out, False


# -- 2. Node.js and the npm packages ---------------------------------------------------------
def code_server_install(version: str) -> Path:
    out = oci.run("bash", ROOT / "scripts" / "setup-codeserver.sh", env={**os.environ, "CODE_SERVER_VERSION": version})
    return Path(out.strip().splitlines()[-1])


def npm_folder(name: str, version: str, node: Path | None, scripts: bool = True) -> tuple[Path, bool]:
    """A folder with ``node_modules/<name>`` at ``version`` (and its dependencies); cached."""
    out = CACHE / "npm" / f"{name.replace('/', '+')}@{version}"
    if (out / ".done").exists():
        return out, True
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "package.json").write_text('{"private": true}\n')
    env = dict(os.environ)
    if node is not None:  # run npm and install scripts on the image's Node, headers from its package
        env["PATH"] = f"{node / 'bin'}:{env['PATH']}"
        env["npm_config_nodedir"] = str(node)
    log(f"npm install {name}@{version}")
    proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--save-exact",
                           *([] if scripts else ["--ignore-scripts"]), f"{name}@{version}"],
                          cwd=tmp, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise PermanentError(f"npm install {name}@{version} failed: {proc.stderr[-1500:]}")
    (tmp / ".done").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out, False


def installed_versions(folder: Path) -> dict[str, str]:
    """name -> version of each top-level package in ``folder``'s node_modules: what is there,
    not what the lock file lists (it names every platform's optional package)."""
    out: dict[str, str] = {}
    modules = folder / "node_modules"
    for manifest in [*modules.glob("*/package.json"), *modules.glob("@*/*/package.json")]:
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("name") and data.get("version"):
            out[data["name"]] = data["version"]
    return out


# -- 3. extensions -------------------------------------------------------------------------
def check_vsix(code_server: Path, vsix: dict[str, Path]) -> dict[str, str]:
    """extension id -> version for each .vsix, by installing them with code-server into a
    scratch folder: a broken file fails the build here, not at a person's first start."""
    if not vsix:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOME": tmp, "XDG_DATA_HOME": f"{tmp}/data", "XDG_CONFIG_HOME": f"{tmp}/config"}
        base = [str(code_server / "bin" / "code-server"), "--extensions-dir", f"{tmp}/ext", "--user-data-dir", f"{tmp}/u"]
        for name, path in vsix.items():
            proc = subprocess.run([*base, "--install-extension", str(path)], capture_output=True, text=True, env=env)
            if proc.returncode != 0 or "Failed" in proc.stdout + proc.stderr:
                raise InvalidInput("code_server.extensions", f"{name} does not install: {(proc.stdout + proc.stderr)[-500:]}")
        listed = oci.run(*base, "--list-extensions", "--show-versions", env=env)
    return dict(line.strip().split("@", 1) for line in listed.splitlines() if "@" in line)


# -- 4. assembly and packing -----------------------------------------------------------------
def apply_plan(rootfs: Path, plan: Plan, vsix: dict[str, Path], uid: int) -> None:
    def at(p: str) -> Path:
        return rootfs / p.lstrip("/")

    for path, text in plan.appends:
        with open(at(path), "a") as f:
            f.write(text)
    for file in plan.files:
        at(file.path).parent.mkdir(parents=True, exist_ok=True)
        at(file.path).write_text(file.content)
        os.chmod(at(file.path), file.mode)
    for path, target in plan.links:
        at(path).parent.mkdir(parents=True, exist_ok=True)
        at(path).unlink(missing_ok=True)
        os.symlink(target, at(path))
    at(EXTENSIONS).mkdir(parents=True, exist_ok=True)
    for name in plan.extensions:
        shutil.copyfile(vsix[name], at(EXTENSIONS) / name)
    for d in plan.owned_dirs:
        at(d).mkdir(parents=True, exist_ok=True)
        os.chown(at(d), uid, uid)


def build(folder: Path = SPEC_DIR, out: Path | None = None, extra_extensions: list[Path] | None = None,
          sources: list[str] | None = None, force: bool = False) -> BuildResult:
    """Build (or reuse, unless ``force``) the image; ``out`` defaults to the cache's build folder."""
    t0 = time.monotonic()
    inputs = load_inputs(folder, extra_extensions)
    spec, plan = inputs.spec, inputs.plan
    seconds: dict[str, float] = {}
    base, base_cached = debian_base(spec, sources or [])
    seconds["debian"] = time.monotonic() - t0
    key = inputs.key(base.name)
    out = Path(out) if out else CACHE / "build" / f"{spec.tag}-{key}"
    done = out / "build.json"
    if done.exists() and not force:
        return BuildResult.from_json(json.loads(done.read_text()))
    from_cache = ["debian"] if base_cached else []
    missing: list[str] = []
    t = time.monotonic()
    node, cached = npm_folder(spec.node.package, spec.node.version, None, scripts=False)
    node_pkg = node / "node_modules" / spec.node.package
    folders: dict[str, Path] = {}
    from_cache += [f"npm {spec.node.package}"] if cached else []
    for pkg in spec.npm:
        if pkg.name == "code-server":
            folders[pkg.name] = code_server_install(pkg.version)
            from_cache.append("npm code-server")
            continue
        try:
            folders[pkg.name], cached = npm_folder(pkg.name, pkg.version, node_pkg)
            from_cache += [f"npm {pkg.name}"] if cached else []
        except PermanentError as exc:
            log(f"{pkg.name}@{pkg.version} is declared but cannot be installed here: {exc}")
            missing.append(f"{pkg.name}@{pkg.version}: {str(exc)[:300]}")
    seconds["npm"] = time.monotonic() - t
    extensions = check_vsix(folders["code-server"], inputs.vsix)

    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        t = time.monotonic()
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        oci.run("tar", "--extract", "--file", base, "--directory", rootfs, "--numeric-owner")
        debs = dpkg_packages((rootfs / "var/lib/dpkg/status").read_text())
        npm_dir = rootfs / APP_ROOT.lstrip("/") / "npm"
        npm_dir.mkdir(parents=True)
        versions = {spec.node.package: spec.node.version}
        oci.run("cp", "-a", node, npm_dir / f"{spec.node.package}@{spec.node.version}")
        for pkg in spec.npm:
            if pkg.name in folders:
                dest = rootfs / pkg.folder.lstrip("/")
                dest.mkdir()
                oci.run("cp", "-a", folders[pkg.name] / "node_modules", dest / "node_modules")
                versions.update(installed_versions(folders[pkg.name]) or {pkg.name: pkg.version})
        absent = [p.folder for p in spec.npm if p.name not in folders]
        links = tuple((p, t_) for p, t_ in plan.links if not any(t_.startswith(f + "/") for f in absent))
        apply_plan(rootfs, replace(plan, links=links), inputs.vsix, spec.user.uid)
        stripped = oci.strip_setuid(rootfs)
        oci.strip_native_build_files(npm_dir)
        seconds["assemble"] = time.monotonic() - t
        t = time.monotonic()
        out.mkdir(parents=True, exist_ok=True)
        layout = out / "oci"
        config = oci.Config(user=plan.user, entrypoint=list(plan.entrypoint), env=list(plan.env),
                            workdir=plan.workdir, labels=plan.labels)
        layout_tmp, digest = oci.pack(rootfs, Path(tmp), spec.tag, config)
        shutil.rmtree(layout, ignore_errors=True)
        shutil.move(str(layout_tmp), layout)
        seconds["pack"] = time.monotonic() - t
    archive = out / "image.tar"
    oci.oci_archive(layout, spec.tag, spec.reference, archive)
    (out / "digest").write_text(digest + "\n")
    packages = out / "packages.txt"
    packages.write_text(package_list(spec.reference, digest, debs, versions, extensions))
    seconds["total"] = time.monotonic() - t0
    result = BuildResult(reference=spec.reference, digest=digest, out=out, layout=layout, archive=archive,
                         packages=packages, seconds={k: round(v, 1) for k, v in seconds.items()},
                         size={**oci.image_size(layout, spec.tag), "archive": archive.stat().st_size},
                         setuid_stripped=stripped, from_cache=from_cache, missing=missing)
    done.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    log(f"{spec.reference}@{digest} in {seconds['total']:.0f}s -> {out}")
    return result


def load_into_registry(result: BuildResult, registry: str, tls_verify: bool = True) -> str:
    """Push the built image to ``registry`` (host[:port]) under its path and tag; the pushed
    reference, by digest (the same digest: skopeo keeps the manifest as built)."""
    path = result.reference.split("/", 1)[1] if "/" in result.reference else result.reference
    dest = f"{registry}/{path}"
    digest = oci.push(result.layout, result.tag, dest, tls_verify)
    return f"{dest.rpartition(':')[0]}@{digest}"


def load_into_kind(result: BuildResult, cluster: str) -> None:
    if not shutil.which("kind"):
        raise PermanentError("kind is not installed here: `vibecode image load --registry HOST:PORT` instead")
    oci.run("kind", "load", "image-archive", result.archive, "--name", cluster)


def differences_between(a: BuildResult, b: BuildResult) -> list[str]:
    """What differs between two builds' layers, path by path (for a digest that moved)."""
    from tasks.image.spec import differences

    return differences(oci.layer_files(a.layout, a.tag), oci.layer_files(b.layout, b.tag))


def bundle_source(result: BuildResult) -> str:
    """The skopeo source a bundle copies the built image from (``flows.bundle``'s ``built``)."""
    return f"oci:{result.layout}:{result.tag}"
