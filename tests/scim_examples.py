"""How scim2-tester is pointed at the gateway, with values a person could have.

scim2-tester fills every attribute with ``uuid4()`` strings unless the client's model
gives pydantic ``examples``; a uuid is a fine SCIM string but not a person's name (the HR
rules refuse digits in names) nor a username (at most 32 characters). So the client's
User model is the gateway's own (:class:`gateway.scim.VibeUser`, same schema URN and
characteristics the server publishes) with examples for ``userName``, ``givenName`` and
``familyName``; every other attribute keeps scim2-tester's random values. The checks and
what they verify are scim2-tester's, unchanged.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field
from scim2_models import EnterpriseUser, Required, ResourceType, ScimProvider, Uniqueness

from gateway.scim import VibeName, VibeUser


class FreshUsernames(Sequence):
    """An endless supply of unused usernames: ``random.choice`` picks a fresh one each time
    (a deleted SCIM user's record is kept, so its username is never handed out again)."""

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, i):
        return "u" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))


GIVEN = ["Alice", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Gunnar", "Hana", "Ingrid", "José"]
FAMILY = ["Liddell", "O'Brien", "Smith-Jones", "Müller", "Nakamura", "García", "Østergaard", "Nguyen"]


class TesterName(VibeName):
    given_name: Annotated[str | None, Required.true] = Field(None, examples=GIVEN)
    family_name: Annotated[str | None, Required.true] = Field(None, examples=FAMILY)


class TesterUser(VibeUser):
    user_name: Annotated[str | None, Uniqueness.server, Required.true] = Field(None, examples=["placeholder"])
    name: Annotated[TesterName | None, Required.true] = None


# Set after the class is built: pydantic would try to put an endless list in the JSON schema.
for _model in (TesterUser, TesterUser[EnterpriseUser]):
    _model.model_fields["user_name"].examples = FreshUsernames()


def scim_tester_provider() -> ScimProvider:
    return ScimProvider(models=[TesterUser, EnterpriseUser],
                        resource_types=[ResourceType.from_resource(TesterUser[EnterpriseUser])])


def scim_tester_client(base_url: str, token: str, realistic: bool = True):
    """A scim2-client over httpx2 for :func:`scim2_tester.check_server`; ``realistic=False``
    leaves the model to discovery (scim2-tester's uuid values everywhere)."""
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient

    http = httpx2.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return SyncSCIMClient(http, provider=scim_tester_provider()) if realistic else SyncSCIMClient(http)
