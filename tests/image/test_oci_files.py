"""The layer's file hygiene (tasks/image/oci.py), on folders made here: fast, no tools."""

from __future__ import annotations

import os
import stat

from tasks.image.oci import strip_native_build_files, strip_setuid


def _touch(p, text="x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_node_gyp_intermediates_go_and_the_compiled_module_stays(tmp_path):
    """Two machines' builds differed only in these files: they name the folder they were built in."""
    b = tmp_path / "node_modules/code-server/lib/vscode/node_modules/kerberos/build"
    node = _touch(b / "Release/kerberos.node", "ELF")
    gone = [_touch(b / "Makefile", "srcdir := /root/.cache/vibecode/..."), _touch(b / "config.gypi"),
            _touch(b / "binding.Makefile"), _touch(b / "kerberos.target.mk"),
            _touch(b / "Release/obj.target/kerberos/src/kerberos.o"),
            _touch(b / "Release/.deps/Release/obj.target/kerberos/src/kerberos.o.d"),
            _touch(b / "deps/sqlite3.target.mk"), _touch(b / "node_modules/node-addon-api/nothing.target.mk")]
    # Not node-gyp's: a package's own build/ folder of JavaScript outside node_modules, and a
    # Makefile that is not in a build/ folder.
    kept = [_touch(tmp_path / "build/Makefile"), _touch(b.parent / "Makefile"), _touch(b / "Release/addon.js")]

    assert strip_native_build_files(tmp_path) == len(gone)

    assert node.read_text() == "ELF" and all(p.exists() for p in kept)
    assert not any(p.exists() for p in gone)
    assert not (b / "Release/obj.target").exists() and not (b / "Release/.deps").exists()
    assert strip_native_build_files(tmp_path) == 0  # a rerun finds nothing


def test_setuid_and_setgid_bits_are_cleared_and_named(tmp_path):
    su = _touch(tmp_path / "usr/bin/su")
    os.chmod(su, 0o4755)
    wall = _touch(tmp_path / "usr/bin/wall")
    os.chmod(wall, 0o2755)
    plain = _touch(tmp_path / "usr/bin/ls")
    os.chmod(plain, 0o755)

    assert strip_setuid(tmp_path) == ["/usr/bin/su", "/usr/bin/wall"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in (su, wall, plain))
