"""Okta and Microsoft Entra ID, replayed: each vendor's documented request sequence
(:mod:`tests.fixtures.idp`: look up, create, get, update, deactivate, reactivate, delete)
against the live gateway, with the SCIM users in the ledger of a real kube-apiserver and the
runs created on the real Prefect server. After every request the test reads back which
runs exist for the person (type, deployment, employee id, username) and what a GET says, so
each step is checked for doing the right thing to the person: a hire, an update, a
termination, or nothing at all. ``externalId`` is the person's stable key (neither vendor
sends ``employeeNumber`` by default).
"""

from __future__ import annotations

import uuid

import pytest

from tasks.people.hr import deployment_for, parse_request
from tasks.people.ledger import Ledger
from tests.fixtures import idp
from tests.fixtures.gateway_http import all_flow_runs, error_log, scim_client

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")


class Person:
    """What the gateway has started for one employee id, step by step."""

    def __init__(self, gw, employee_id: str) -> None:
        self.gw, self.employee_id, self.seen = gw, employee_id, 0

    def runs(self) -> list[dict]:
        # The session's other flow runs (the reaper's, a backup's) have other parameters, or none
        return [r for r in all_flow_runs()
                if ((r.parameters.get("request") or {}).get("employee") or {}).get("employee_id") == self.employee_id]

    def new(self) -> list[str]:
        """The event types started since the last call, each checked to be a valid HR event on
        the deployment its type routes to."""
        runs = self.runs()
        fresh, self.seen = runs[self.seen:], len(runs)
        names = {v: k for k, v in self.gw.deployment_ids.items()}
        for run in fresh:
            req = run.parameters["request"]
            parse_request(req)
            assert names[str(run.deployment_id)] == deployment_for(req["type"], self.gw.settings)
        return [r.parameters["request"]["type"] for r in fresh]

    def last(self) -> dict:
        return self.runs()[-1].parameters["request"]["employee"]


@pytest.fixture
def idp_gateway(scim_gateway, hr_deployments):
    scim_gateway.deployment_ids = {k: v for k, v in hr_deployments.items()}
    with error_log() as errors:
        yield scim_gateway
    assert errors.summary() == []  # no request of either vendor is a fault of ours


@pytest.mark.parametrize("integration", ["oin", "aiw"])
def test_okta_sequence_provisions_updates_deactivates_and_reactivates_the_person(idp_gateway, kube, integration):
    """OIN integrations (de)activate by PATCH, App Integration Wizard ones by PUT."""
    gw = idp_gateway
    n = uuid.uuid4().hex[:6]
    # Okta's examples use test.user@okta.local; ".local" is a special-use name no mail goes to.
    login, okta_id = f"test.user.{n}@example.com", idp.okta_id()
    person = Person(gw, okta_id)
    ledger = Ledger(gw.settings, kube=kube)

    def set_active(c, uid, active: bool, given: str = "Another"):
        if integration == "oin":
            return c.patch(f"/Users/{uid}", json=idp.okta_set_active(active))
        return c.put(f"/Users/{uid}", json=idp.okta_put(uid, login, given, "Excited", "User", active))

    with scim_client(gw, "application/scim+json; charset=utf-8") as c:
        found = c.get("/Users", params=idp.okta_lookup(login))
        assert found.status_code == 200 and found.json()["totalResults"] == 0
        created = c.post("/Users", json=idp.okta_create(login, "Test", "User", okta_id))
        assert created.status_code == 201, created.text
        uid = created.json()["id"]
        assert "password" not in created.json() and created.json()["externalId"] == okta_id
        assert person.new() == ["employee.hired"]
        assert person.last()["username"] == f"test-user-{n}" and person.last()["email"] == login
        assert ledger.by_scim_id(uid).employee_id == okta_id  # externalId is the stable key

        got = c.get(f"/Users/{uid}")
        assert got.status_code == 200 and got.json()["active"] is True and got.json()["userName"] == login
        again = c.get("/Users", params=idp.okta_lookup(login)).json()
        assert again["totalResults"] == 1 and again["Resources"][0]["id"] == uid
        assert uid in [u["id"] for u in c.get("/Users", params={"startIndex": 1, "count": 100}).json()["Resources"]]

        put = c.put(f"/Users/{uid}", json=idp.okta_put(uid, login, "Another", "Excited", "User", True))
        assert put.status_code == 200 and put.json()["name"]["givenName"] == "Another"
        assert person.new() == ["employee.updated"] and person.last()["given_name"] == "Another"

        off = set_active(c, uid, False)
        assert off.status_code in (200, 204), off.text
        assert person.new() == ["employee.terminated"]
        assert c.get(f"/Users/{uid}").json()["active"] is False

        # A profile change while deactivated (Okta's full PUT, active as Okta holds it): nothing.
        assert c.put(f"/Users/{uid}", json=idp.okta_put(uid, login, "Anna", "", "User", False)).status_code == 200
        assert person.new() == []

        on = set_active(c, uid, True, given="Anna")
        assert on.status_code in (200, 204), on.text
        assert person.new() == ["employee.hired"] and person.last()["given_name"] == "Anna"
        assert c.get(f"/Users/{uid}").json()["active"] is True
    assert ledger.by_scim_id(uid).username == f"test-user-{n}"


@pytest.mark.parametrize("flag", [False, True], ids=["default", "aadOptscim062020"])
def test_entra_sequence_provisions_updates_disables_enables_and_deletes_the_person(idp_gateway, kube, flag):
    gw = idp_gateway
    n = uuid.uuid4().hex[:6]
    upn, object_id = f"alice.{n}@contoso.com", str(uuid.uuid4())
    person = Person(gw, object_id)
    ledger = Ledger(gw.settings, kube=kube)
    with scim_client(gw) as c:
        assert c.get("/Users", params={"filter": f'userName eq "{upn}"'}).json()["totalResults"] == 0
        created = c.post("/Users", json=idp.entra_create(upn, object_id))
        assert created.status_code == 201, created.text
        uid = created.json()["id"]
        assert person.new() == ["employee.hired"]
        assert (person.last()["username"], person.last()["given_name"]) == (f"alice-{n}", "givenName")
        assert c.get(f"/Users/{uid}").json()["externalId"] == object_id
        for flt in (f'userName eq "{upn}"', f'emails[type eq "work"].value eq "{upn}"', f'externalId eq "{object_id}"'):
            hits = c.get("/Users", params={"filter": flt}).json()
            assert hits["totalResults"] == 1 and hits["Resources"][0]["id"] == uid, flt

        new_mail = f"alice.liddell.{n}@contoso.com"
        upd = c.patch(f"/Users/{uid}", json=idp.entra_update_multi(new_mail, "Liddell", flag))
        assert upd.status_code in (200, 204), upd.text
        assert person.new() == ["employee.updated"]
        assert (person.last()["email"], person.last()["family_name"]) == (new_mail, "Liddell")

        renamed = c.patch(f"/Users/{uid}", json=idp.entra_update_user_name(f"alice.l.{n}@contoso.com", flag))
        assert renamed.status_code in (200, 204), renamed.text
        assert c.get(f"/Users/{uid}").json()["userName"] == f"alice.l.{n}@contoso.com"
        assert person.new() == [] and ledger.by_scim_id(uid).username == f"alice-{n}"  # the username is fixed

        off = c.patch(f"/Users/{uid}", json=idp.entra_set_active(False, flag))
        assert off.status_code in (200, 204), off.text
        assert person.new() == ["employee.terminated"]
        assert c.get(f"/Users/{uid}").json()["active"] is False  # still returned while soft-deleted

        on = c.patch(f"/Users/{uid}", json=idp.entra_set_active(True, flag))
        assert on.status_code in (200, 204), on.text
        assert person.new() == ["employee.hired"] and person.last()["username"] == f"alice-{n}"

        assert c.delete(f"/Users/{uid}").status_code == 204
        assert person.new() == ["employee.terminated"]
        assert c.get(f"/Users/{uid}").status_code == 404
        assert c.get("/Users", params={"filter": f'externalId eq "{object_id}"'}).json()["totalResults"] == 0
        rec = ledger.by_employee(object_id)
        assert rec.username == f"alice-{n}" and rec.scim_id == ""  # the person is kept, the SCIM User is gone

        # Assigned again later, after a name change: Entra looks the new UPN up, finds nothing,
        # and creates. The person comes back into the username they own.
        upn2 = f"alice.smith.{n}@contoso.com"
        assert c.get("/Users", params={"filter": f'userName eq "{upn2}"'}).json()["totalResults"] == 0
        back = c.post("/Users", json=idp.entra_create(upn2, object_id, family="Smith"))
        assert back.status_code == 201, back.text
        assert person.new() == ["employee.hired"]
        assert (person.last()["username"], person.last()["family_name"]) == (f"alice-{n}", "Smith")
        assert ledger.by_scim_id(back.json()["id"]).username == f"alice-{n}"
