"""A minimal VS Code extension packed as a .vsix (a zip: the manifest, the content types and
``extension/package.json``), made by the tests, since no marketplace is reachable here."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

MANIFEST = """<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">
  <Metadata>
    <Identity Language="en-US" Id="{name}" Version="{version}" Publisher="{publisher}"/>
    <DisplayName>{name}</DisplayName>
    <Description xml:space="preserve">A test extension made by the VibeCode tests.</Description>
    <Properties><Property Id="Microsoft.VisualStudio.Code.Engine" Value="^1.80.0"/></Properties>
  </Metadata>
  <Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation>
  <Dependencies/>
  <Assets><Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" Addressable="true"/></Assets>
</PackageManifest>
"""
CONTENT_TYPES = """<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
  <Default Extension=".json" ContentType="application/json"/>
  <Default Extension=".js" ContentType="application/javascript"/>
  <Default Extension=".vsixmanifest" ContentType="text/xml"/>
</Types>
"""


def make_vsix(folder: Path, publisher: str = "vibecode-tests", name: str = "probe", version: str = "0.0.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{publisher}.{name}-{version}.vsix"
    package = {"name": name, "publisher": publisher, "version": version, "displayName": name,
               "engines": {"vscode": "^1.80.0"}, "main": "./extension.js",
               "activationEvents": ["onStartupFinished"],
               "contributes": {"commands": [{"command": f"{name}.hello", "title": "VibeCode probe"}]}}
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("extension.vsixmanifest", MANIFEST.format(name=name, version=version, publisher=publisher))
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("extension/package.json", json.dumps(package, indent=2))
        z.writestr("extension/extension.js", "exports.activate = () => {};\nexports.deactivate = () => {};\n")
    return out
