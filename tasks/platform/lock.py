"""The platform's lock file (``deployments/platform.lock.yaml``): every upstream chart and image, pinned.

Pure: it parses and checks data and rewrites references; reading the file is the one I/O, in
:func:`load_lock`. A pin is a chart archive's sha256 or an image's multi-architecture index
digest; an entry whose digest (or chart version) is ``null`` is *unpinned*. The lock may hold
unpinned entries (an honest "not verified yet"), but nothing installs from them without saying
so: :func:`lock_problems` lists them, and the bundle and the air-gapped install refuse them
(:func:`require_pinned`).

Image references are normalised as container runtimes do (``postgres`` is
``docker.io/library/postgres``), so a chart that renders ``docker.io/envoyproxy/gateway`` and
one that renders ``envoyproxy/gateway`` name the same image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import yaml
from pydantic import BaseModel, Field, field_validator

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_LOCK = Path(__file__).resolve().parents[2] / "deployments" / "platform.lock.yaml"
DOCKER_HUB = "docker.io"


class LockError(ValueError):
    """The lock is malformed, or an install needs an entry it does not pin."""


def _digest(v: str | None) -> str | None:
    if v is not None and not DIGEST_RE.match(v):
        raise ValueError(f"{v!r} is not a sha256 digest (sha256:<64 hex>)")
    return v


class ImageRef(BaseModel):
    """A parsed reference: domain/path[:tag][@digest]."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_image(ref: str) -> ImageRef:
    """Split a reference the way the container runtimes do (docker's reference grammar)."""
    rest, _, digest = ref.partition("@")
    if digest:
        _digest(digest)
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
    else:
        domain, path = DOCKER_HUB, rest
        if "/" not in path:
            path = f"library/{path}"
    tag = None
    name, colon, maybe_tag = path.rpartition(":")
    if colon and "/" not in maybe_tag:
        path, tag = name, maybe_tag
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = DOCKER_HUB
    if not path or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", path):
        raise ValueError(f"{ref!r} is not an image reference")
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest or None)


def normalise(ref: str) -> str:
    return str(parse_image(ref))


class ChartPin(BaseModel):
    """An upstream chart: where it is, its exact version, the sha256 of its archive."""

    model_config = {"extra": "forbid"}

    repository: str = Field(description="oci://host/path/NAME, or a chart repository URL (https://...)")
    chart: str | None = Field(None, description="Chart name in a chart repository (default: the entry's key); "
                                                "an OCI reference names the chart itself")
    version: str | None = Field(description="Exact chart version; null = not verified")
    digest: str | None = Field(description="sha256 of the chart archive; null = not verified")

    _check_digest = field_validator("digest")(classmethod(lambda cls, v: _digest(v)))

    @field_validator("repository")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("oci://", "https://", "http://")):
            raise ValueError(f"{v!r}: a chart comes from oci://... or a chart repository URL")
        return v.rstrip("/")

    @property
    def is_oci(self) -> bool:
        return self.repository.startswith("oci://")

    def name(self, key: str) -> str:
        return self.repository.rsplit("/", 1)[1] if self.is_oci else (self.chart or key)

    @property
    def pinned(self) -> bool:
        return self.version is not None and self.digest is not None


class ImagePin(BaseModel):
    model_config = {"extra": "forbid"}

    image: str = Field(description="Reference as charts render it (repository:tag)")
    digest: str | None = Field(description="Multi-architecture index digest; null = not verified")
    component: str = Field(description="The platform component that runs it")
    build: str | None = Field(None, description="Built from this repository, not pulled: how")

    _check_digest = field_validator("digest")(classmethod(lambda cls, v: _digest(v)))

    @field_validator("image")
    @classmethod
    def _tagged(cls, v: str) -> str:
        ref = parse_image(v)
        if ref.digest or not ref.tag:
            raise ValueError(f"{v!r}: write repository:tag here and the digest in `digest`")
        return v

    @property
    def ref(self) -> ImageRef:
        return parse_image(self.image)

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    @property
    def pinned_ref(self) -> str:
        """repository:tag@digest (what a pod should run); the tag alone when unpinned."""
        r = self.ref
        return str(r.model_copy(update={"digest": self.digest}))


class Lock(BaseModel):
    model_config = {"extra": "forbid", "populate_by_name": True}

    schema_: int = Field(alias="schema")
    kind: dict
    charts: dict[str, ChartPin]
    images: dict[str, ImagePin]

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"lock schema {v} is not supported (1 is)")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: dict) -> dict:
        if set(v) != {"version", "node_image"}:
            raise ValueError("kind: needs exactly `version` and `node_image`")
        node = dict(v["node_image"])
        node.setdefault("component", "kind")
        return {"version": str(v["version"]), "node_image": ImagePin.model_validate(node)}

    @property
    def kind_version(self) -> str:
        return self.kind["version"]

    @property
    def node_image(self) -> ImagePin:
        return self.kind["node_image"]

    def image(self, key: str) -> ImagePin:
        try:
            return self.images[key]
        except KeyError:
            raise LockError(f"the lock has no image {key!r}") from None

    def chart(self, key: str) -> ChartPin:
        try:
            return self.charts[key]
        except KeyError:
            raise LockError(f"the lock has no chart {key!r}") from None

    def images_of(self, component: str) -> dict[str, ImagePin]:
        return {k: v for k, v in self.images.items() if v.component == component}

    def listed_repositories(self) -> dict[str, str]:
        """normalised repository:tag -> entry key, for every image (node image included)."""
        out = {normalise(pin.image): key for key, pin in self.images.items()}
        out[normalise(self.node_image.image)] = "kind.node_image"
        return out

    def find(self, ref: str) -> str | None:
        """The entry key of a rendered reference, or None when the lock does not list it. A
        reference by digest matches the entry with that digest; one by tag, the entry's tag."""
        r = parse_image(ref)
        for key, pin in {**self.images, "kind.node_image": self.node_image}.items():
            p = pin.ref
            if p.repository != r.repository:
                continue
            if r.digest is not None:
                if pin.digest == r.digest:
                    return key
            elif p.tag == r.tag:
                return key
        return None


def pinned_for(lock: Lock, key: str, ref: str) -> str:
    """``ref`` by the lock's digest when it names entry ``key`` by its tag (the configured image is
    the lock's); ``ref`` unchanged otherwise (an override, or already by digest)."""
    pin = lock.images.get(key)
    if pin is None or pin.digest is None or parse_image(ref).digest is not None:
        return ref
    return pin.pinned_ref if normalise(ref) == normalise(pin.image) else ref


def load_lock(path: Path | str | None = None) -> Lock:
    p = Path(path) if path else DEFAULT_LOCK
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LockError(f"cannot read the lock {p}: {exc}") from None
    try:
        return Lock.model_validate(data)
    except ValueError as exc:
        raise LockError(f"{p}: {exc}") from None


def lock_problems(lock: Lock) -> list[str]:
    """Every entry that is not pinned, as a sentence for a person (empty: all pinned). Images
    built from this repository are not upstream pins and are not listed."""
    problems = []
    for key, chart in lock.charts.items():
        missing = [f for f in ("version", "digest") if getattr(chart, f) is None]
        if missing:
            problems.append(f"chart {key} ({chart.repository}): no {' and no '.join(missing)} pinned")
    for key, pin in {"kind.node_image": lock.node_image, **lock.images}.items():
        if pin.digest is None and pin.build is None:
            problems.append(f"image {key} ({pin.image}): no digest pinned")
    return problems


def require_pinned(lock: Lock, charts: Iterable[str], images: Iterable[str], why: str) -> None:
    """Raise :class:`LockError` naming each chart or image among these that is not pinned."""
    bad = [f"chart {c} ({lock.chart(c).repository})" for c in charts if not lock.chart(c).pinned]
    bad += [f"image {i} ({lock.image(i).image})" for i in images
            if not lock.image(i).pinned and lock.image(i).build is None]
    if bad:
        raise LockError(f"{why} refuses entries of {DEFAULT_LOCK.name} that are not pinned by digest: "
                        + "; ".join(bad) + ". Pin them (a verified digest) or leave their component out.")


def rehost(pin: ImagePin, registry: str | None) -> str:
    """The reference a pod should use: pinned upstream, or the same repository path and digest in
    ``registry`` (an air-gapped install's mirror; digests are preserved, so the pin still holds)."""
    if registry is None:
        return pin.pinned_ref
    r = pin.ref
    return str(ImageRef(domain=registry, path=r.path, tag=r.tag, digest=pin.digest))


def with_overrides(lock: Lock, charts: dict[str, dict] | None = None, images: dict[str, dict] | None = None) -> Lock:
    """A copy with some entries changed (tests serve test charts from a loopback registry)."""
    data = lock.model_dump(by_alias=True)
    data["kind"] = {"version": lock.kind_version, "node_image": lock.node_image.model_dump()}
    for key, change in (charts or {}).items():
        data["charts"][key] = {**data["charts"].get(key, {}), **change}
    for key, change in (images or {}).items():
        data["images"][key] = {**data["images"].get(key, {}), **change}
    return Lock.model_validate(data)


def dump_lock(lock: Lock) -> str:
    data = lock.model_dump(by_alias=True, exclude_none=False)
    data["kind"] = {"version": lock.kind_version, "node_image": lock.node_image.model_dump(exclude={"build"})}
    return yaml.safe_dump(data, sort_keys=False)
