"""A workspace's requests and limits come from settings, so a small node can pack more people
(the platform-day node test runs 20 workspaces on 2 cores by lowering the requests)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tasks.core.names import workspace_names
from tasks.core.settings import Settings
from tasks.workspace.values import workspace_values


def test_defaults_are_the_charts_own():
    values = workspace_values(workspace_names("alice"), Settings())
    assert values["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                   "limits": {"cpu": "2", "memory": "4Gi"}}


def test_lowered_requests_reach_the_chart_values(monkeypatch):
    monkeypatch.setenv("VIBECODE_WORKSPACE__CPU_REQUEST", "50m")
    monkeypatch.setenv("VIBECODE_WORKSPACE__MEMORY_REQUEST", "192Mi")
    values = workspace_values(workspace_names("alice"), Settings())
    assert values["resources"]["requests"] == {"cpu": "50m", "memory": "192Mi"}
    assert values["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}


@pytest.mark.parametrize("field,value", [("cpu_request", "half"), ("memory_request", "1 GB"),
                                         ("cpu_limit", "-1"), ("memory_limit", "4gib")])
def test_a_quantity_the_chart_would_refuse_is_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError) as err:
        Settings(workspace={field: value})
    assert field in str(err.value)
