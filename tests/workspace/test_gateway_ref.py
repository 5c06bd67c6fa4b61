"""tasks.workspace.values.platform_gateway: which Gateway a workspace's HTTPRoute attaches to,
decided from the Gateways provisioning LISTs by label (pure)."""

from __future__ import annotations

import pytest

from tasks.core.errors import PermanentError
from tasks.core.settings import Settings
from tasks.workspace.values import GatewayRef, platform_gateway

S = Settings(platform_namespace="vibecode-platform", domain="vibecode.dev")


def gw(name, ns, *listeners):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"listeners": [{"name": n, "hostname": h} if h else {"name": n} for n, h in listeners]}}


PLATFORM = gw("vibecode", "vibecode-platform", ("portal", "auth.vibecode.dev"), ("workspaces", "*.vibecode.dev"))


@pytest.mark.parametrize("gateways, want", [
    ([], None),
    ([PLATFORM], GatewayRef("vibecode", "vibecode-platform", "workspaces")),
    # The listener is found by its hostname, not assumed by name.
    ([gw("edge", "infra", ("https", "*.vibecode.dev"))], GatewayRef("edge", "infra", "https")),
    # A listener named `workspaces` without hostname (serves every host) is accepted.
    ([gw("edge", "infra", ("workspaces", None))], GatewayRef("edge", "infra", "workspaces")),
    # Several labelled: the one in the platform namespace.
    ([gw("old", "infra", ("workspaces", None)), PLATFORM], GatewayRef("vibecode", "vibecode-platform", "workspaces")),
])
def test_platform_gateway(gateways, want):
    assert platform_gateway(gateways, S) == want


def test_several_gateways_none_in_the_platform_namespace_is_refused():
    with pytest.raises(PermanentError, match="several Gateways"):
        platform_gateway([gw("a", "x", ("workspaces", None)), gw("b", "y", ("workspaces", None))], S)


def test_a_gateway_without_a_workspace_listener_is_refused():
    with pytest.raises(PermanentError, match=r"no listener for \*\.vibecode\.dev"):
        platform_gateway([gw("vibecode", "vibecode-platform", ("portal", "auth.vibecode.dev"),
                             ("other", "*.elsewhere.org"))], S)
