"""``prefect.yaml`` as typed specs. Pure: no prefect, no I/O beyond reading the file given.

Strict on purpose: an unknown key is refused instead of silently ignored, so what the file
says is what ``vibecode deploy`` registers. Prefect's own ``prefect deploy --all`` reads the
same file (every key here is one of Prefect's).

The schedules' timezone is set once, ``definitions.timezone``: every schedule must use it
(through the ``*timezone`` anchor), and ``settings.backup.timezone`` (the days retention
counts in) is derived from it (:func:`tasks.core.settings.prefect_yaml_timezone`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.core.errors import InvalidInput
from tasks.core.settings import PREFECT_YAML

PoolType = Literal["process", "kubernetes"]
_STRICT = ConfigDict(extra="forbid", frozen=True)


class Schedule(BaseModel):
    model_config = _STRICT

    cron: str = Field(min_length=9)
    timezone: str
    active: bool = True


class Concurrency(BaseModel):
    """A deployment's own limit: ``CANCEL_NEW`` drops a run that would overlap, ``ENQUEUE`` waits."""

    model_config = _STRICT

    limit: int = Field(ge=1)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"]


class PoolRef(BaseModel):
    model_config = _STRICT

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentSpec(BaseModel):
    model_config = _STRICT

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    description: str = Field(min_length=10)
    entrypoint: str = Field(pattern=r"^flows/[a-z_]+\.py:[a-z_]+$")
    tags: list[str] = Field(min_length=1)
    work_pool: PoolRef
    schedules: list[Schedule] = Field(default_factory=list)
    concurrency_limit: Concurrency | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.entrypoint.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def function(self) -> str:
        return self.entrypoint.split(":")[1]


class Definitions(BaseModel):
    """The anchors the deployments reuse. ``work_pools`` is keyed by pool type."""

    model_config = _STRICT

    timezone: str
    work_pools: dict[PoolType, PoolRef]
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    concurrency: dict[str, Concurrency] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA timezone (e.g. UTC, Europe/Berlin)") from None
        return v


class Project(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    prefect_version: str = Field(alias="prefect-version")
    definitions: Definitions
    deployments: list[DeploymentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> "Project":
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names repeat: {sorted({n for n in names if names.count(n) > 1})}")
        pools = {p.name for p in self.definitions.work_pools.values()}
        for d in self.deployments:
            if d.work_pool.name not in pools:
                raise ValueError(f"deployment {d.name}: work pool {d.work_pool.name!r} is not one of "
                                 f"definitions.work_pools ({sorted(pools)})")
            for s in d.schedules:
                if s.timezone != self.definitions.timezone:
                    raise ValueError(f"deployment {d.name}: schedule timezone {s.timezone!r} is not "
                                     f"definitions.timezone ({self.definitions.timezone!r}); use *timezone")
        return self

    def pool(self, kind: PoolType) -> PoolRef:
        return self.definitions.work_pools[kind]

    def for_pool(self, kind: PoolType) -> list[DeploymentSpec]:
        """Every deployment on the pool of type ``kind`` (the file names the process pool;
        ``vibecode deploy --pool kubernetes`` moves them all to the kubernetes one)."""
        target = self.pool(kind)
        return [d.model_copy(update={"work_pool": target}) for d in self.deployments]


def load_project(path: Path = PREFECT_YAML) -> Project:
    """The file, checked; anything wrong is ``InvalidInput`` naming prefect.yaml and the place."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InvalidInput("prefect.yaml", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput("prefect.yaml", f"is not YAML: {exc}") from None
    try:
        return Project.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise InvalidInput("prefect.yaml", f"{where}: {err['msg']}") from None
