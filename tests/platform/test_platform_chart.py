"""charts/vibecode-platform, rendered by the real helm with every option on, and checked:

helm lint --strict; the values schema (refuses unknown keys at every level, describes every
field); Authelia's configuration against Authelia 4.39's published JSON schema; the access rules
as a table (owner with two factors only); Pod Security "restricted" for every pod; every object
against Kubernetes' schemas (1.33 and 1.37, strict) or its CRD's schema; the NetworkPolicies'
connectivity, computed by network-config-analyzer, equal to a table; the component toggles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tasks.core.names import RESERVED_USERNAMES
from tasks.core.settings import Settings
from tasks.platform.access import Subject, decide
from tasks.platform.lock import load_lock
from tasks.platform.plan import PLATFORM_PARTS, ClusterFacts, Verdict
from tasks.platform.releases import desired_releases
from tasks.platform.values import AUTHELIA_SECRET_FILES, FLOWS_RULES, GATEWAY_LABEL, SECRET_KEYS
from tests.fixtures import netpol
from tests.fixtures.pss import restricted_violations
from tests.fixtures.render import (
    AUTHELIA_SCHEMA,
    PLATFORM_CHART,
    WORKSPACE_CHART,
    cel_rules,
    crd_problems,
    helm_runner,
    is_crd_kind,
    kubernetes_problems,
    pod_specs,
    render,
    require_upstream,
)

K8S_VERSIONS = ["1.33.0", "1.37.0"]
PNS, WNS, ONS = "vibecode-platform", "vibecode-workspaces", "vibecode-ops"

# Every option on: ACME (DNS-01) beside the local CA, SMTP with a login, every component.
ALL_ON = {
    "certificates": {"acme": {"enabled": True, "email": "ops@example.org"}},
    "authelia": {"smtp": {"host": "smtp.example.org", "username": "authelia"}},
}
DEFAULTS_YAML = yaml.safe_load((PLATFORM_CHART / "values.yaml").read_text())
SCHEMA = json.loads((PLATFORM_CHART / "values.schema.json").read_text())


@pytest.fixture(scope="session")
def helm(helm_bin, tmp_path_factory):
    return helm_runner(helm_bin, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def vals_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("values")


@pytest.fixture(scope="session")
def all_on(helm, vals_dir) -> list[dict]:
    return render(helm, PLATFORM_CHART, ALL_ON, tmp=vals_dir)


def _index(docs):
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


def _one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _config(docs) -> dict:
    return yaml.safe_load(_one(docs, "Secret", "authelia-config")["stringData"]["configuration.yml"])


def _schema_error(helm, *args) -> str:
    proc = helm("template", "p", str(PLATFORM_CHART), *args)
    assert proc.returncode != 0, f"helm accepted {args}"
    return proc.stderr


# ---------------------------------------------------------------------------- lint, schema


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-on"])
def test_helm_lint_strict_is_clean(helm, vals_dir, values):
    args = ["lint", "--strict", str(PLATFORM_CHART)]
    if values:
        f = vals_dir / "lint.json"
        f.write_text(json.dumps(values))
        args += ["-f", str(f)]
    proc = helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def _object_paths(node, prefix=""):
    """Every mapping in values.yaml that the schema closes (not free-form label maps)."""
    if isinstance(node, dict):
        if not prefix.endswith(("Labels", "podLabels", "proxyPodLabels", "dnsPodLabels")):
            yield prefix
            for key, value in node.items():
                yield from _object_paths(value, f"{prefix}.{key}" if prefix else key)


@pytest.mark.parametrize("path", sorted(set(_object_paths(DEFAULTS_YAML))))
def test_schema_refuses_unknown_keys_at_every_level(helm, path):
    key = f"{path}.bogusKey" if path else "bogusKey"
    err = _schema_error(helm, "--set", f"{key}=1")
    where = "/" + path.replace(".", "/") if path else ""
    assert f"at '{where}': additional properties 'bogusKey' not allowed" in err, err


OPTIONAL = {"#rule": {"resourceNames"}}  # the only field a value may leave out (an RBAC rule's)


def test_schema_closes_and_describes_every_field():
    defs = SCHEMA["definitions"]
    problems = []

    def walk(node, where):
        if "$ref" in node:
            return
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                problems.append(f"{where}: additionalProperties is not false")
            missing = set(node["properties"]) - set(node.get("required", [])) - OPTIONAL.get(where, set())
            if missing:
                problems.append(f"{where}: not required: {sorted(missing)}")
            for key, sub in node["properties"].items():
                target = defs[sub["$ref"].rsplit("/", 1)[1]] if "$ref" in sub else sub
                if not (sub.get("description") or target.get("description")):
                    problems.append(f"{where}.{key}: no description")
                walk(sub, f"{where}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{where}[{key}]")
        for sub in node.get("allOf", []):
            walk(sub, where)

    walk(SCHEMA, "")
    for name, d in defs.items():
        walk(d, f"#{name}")
    assert problems == []


@pytest.mark.parametrize("args, field", [
    (["--set-string", "domain=Example.ORG"], "/domain"),
    (["--set-string", "namespaces.podSecurity.platform=lax"], "/namespaces/podSecurity/platform"),
    (["--set-string", "authelia.image.digest=sha256:abc"], "/authelia/image/digest"),
    (["--set-string", "networkPolicies.podCIDRs[0]=10.0.0.0/33"], "/networkPolicies/podCIDRs/0"),
    (["--set", "authelia.port=0"], "/authelia/port"),
    (["--set-string", "certificates.acme.email=not-an-email"], "/certificates/acme/email"),
    (["--set-string", "rbac.rules.cluster[0].verbs[0]=escalate"], "/rbac/rules/cluster/0/verbs/0"),
    (["--set-string", "seaweedfs.externalEndpoint=ftp://s3"], "/seaweedfs/externalEndpoint"),
])
def test_schema_rejects_bad_values(helm, args, field):
    assert field in _schema_error(helm, *args)


def test_an_unpinned_image_fails_the_render_unless_local_images_are_allowed(helm):
    err = _schema_error(helm, "--set-string", "authelia.image.digest=")
    assert "authelia.image has no digest" in err
    proc = helm("template", "p", str(PLATFORM_CHART), "--set-string", "authelia.image.digest=",
                "--set-string", "authelia.image.repository=vibecode/authelia", "--set", "images.allowUnpinned=true")
    assert proc.returncode == 0, proc.stderr
    dep = _one([d for d in yaml.safe_load_all(proc.stdout) if d], "Deployment", "authelia")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "vibecode/authelia:4.39.20"


def test_every_image_is_pinned_by_digest(all_on):
    images = [(n, c["image"]) for n, pod in pod_specs(all_on)
              for c in pod.get("initContainers", []) + pod["containers"]]
    images.append(("EnvoyProxy", _one(all_on, "EnvoyProxy", "vibecode")["spec"]["provider"]["kubernetes"]
                   ["envoyDeployment"]["container"]["image"]))
    assert len(images) >= 6
    for where, ref in images:
        repo, _, digest = ref.partition("@")
        assert digest.startswith("sha256:") and len(digest) == 71 and ":" not in repo.rsplit("/", 1)[-1], (where, ref)


# --------------------------------------------------------------------------- what renders


def test_every_option_on_renders_exactly_these_objects(all_on):
    got = sorted((d["kind"], d["metadata"].get("namespace") or "", d["metadata"]["name"]) for d in all_on)
    assert got == sorted([
        *(("Namespace", "", n) for n in (PNS, WNS, ONS)),
        ("GatewayClass", "", "vibecode"), ("EnvoyProxy", PNS, "vibecode"), ("Gateway", PNS, "vibecode"),
        ("HTTPRoute", PNS, "authelia-portal"), ("HTTPRoute", PNS, "https-redirect"),
        ("SecurityPolicy", PNS, "workspace-sso"), ("ClientTrafficPolicy", PNS, "vibecode-timeouts"),
        ("ClusterIssuer", "", "vibecode-ca-selfsigned"), ("Certificate", "cert-manager", "vibecode-ca"),
        ("ClusterIssuer", "", "vibecode-ca"), ("ClusterIssuer", "", "vibecode-ca-acme"),
        ("Certificate", PNS, "vibecode-portal"), ("Certificate", PNS, "vibecode-workspaces"),
        ("Certificate", PNS, "vibecode-hr"),
        ("Secret", PNS, "authelia-config"), ("ServiceAccount", PNS, "authelia"), ("Service", PNS, "authelia"),
        ("Deployment", PNS, "authelia"),
        *((k, PNS, n) for n in ("authelia-postgresql", "authelia-redis", "seaweedfs") for k in ("Service", "StatefulSet")),
        ("NetworkPolicy", PNS, "default-deny"), ("NetworkPolicy", WNS, "default-deny"),
        ("NetworkPolicy", WNS, "workspaces"), ("NetworkPolicy", WNS, "backup-jobs"),
        *(("NetworkPolicy", PNS, n) for n in ("authelia", "totp-provision", "authelia-postgresql",
                                               "authelia-redis", "seaweedfs", "acme-http01-solver")),
        ("ServiceAccount", ONS, "vibecode-flows"),
        *((k, ns, "vibecode-flows") for ns in (WNS, PNS, "cert-manager") for k in ("Role", "RoleBinding")),
        ("ClusterRole", "", "vibecode-flows"), ("ClusterRoleBinding", "", "vibecode-flows"),
    ])
    assert not any(d["kind"] == "Secret" and d["metadata"]["name"] in ("authelia-users", "vibecode-platform-secrets",
                                                                        "vibecode-smtp") for d in all_on)


CRD_KINDS = {"GatewayClass", "Gateway", "HTTPRoute", "EnvoyProxy", "SecurityPolicy", "ClientTrafficPolicy",
             "Certificate", "ClusterIssuer"}


@pytest.mark.parametrize("off, gone", [
    ("gateway", {"GatewayClass", "Gateway", "HTTPRoute", "EnvoyProxy", "SecurityPolicy", "ClientTrafficPolicy"}),
    ("certificates", {"Certificate", "ClusterIssuer"}),
    ("authelia", {"Deployment"}),
    ("postgresql", set()),
    ("redis", set()),
    ("seaweedfs", set()),
    ("networkPolicies", {"NetworkPolicy"}),
    ("rbac", {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}),
])
def test_each_component_can_be_turned_off_alone(helm, vals_dir, all_on, off, gone):
    values = json.loads(json.dumps(ALL_ON))
    values.setdefault(off, {})["enabled"] = False
    if off in ("postgresql", "redis"):
        values[off]["host"] = f"{off}.example.org"
    docs = render(helm, PLATFORM_CHART, values, tmp=vals_dir)
    kinds = {d["kind"] for d in docs}
    assert not gone & kinds
    names = {d["metadata"]["name"] for d in docs}
    own = {"postgresql": "authelia-postgresql", "redis": "authelia-redis", "seaweedfs": "seaweedfs",
           "authelia": "authelia"}.get(off)
    if own:
        assert not any(d["metadata"]["name"] == own and d["kind"] in ("StatefulSet", "Deployment", "Service")
                       for d in docs)
    # Everything else is still there.
    assert len(docs) < len(all_on) and {"Namespace"} <= kinds
    if off != "authelia":
        assert "authelia-config" in names or off == "authelia"


def test_the_one_node_profile_renders_no_crd_kind(helm, vals_dir):
    """The one-node cluster has no Envoy Gateway, cert-manager or Authelia: what remains must not
    need any CRD, or the install fails there."""
    values = {"gateway": {"enabled": False}, "certificates": {"enabled": False}, "authelia": {"enabled": False},
              "images": {"allowUnpinned": True},
              "seaweedfs": {"image": {"repository": "vibecode/seaweedfs", "tag": "4.48", "digest": ""}}}
    docs = render(helm, PLATFORM_CHART, values, tmp=vals_dir)
    assert not {d["kind"] for d in docs} & CRD_KINDS
    assert _one(docs, "StatefulSet", "seaweedfs")["spec"]["template"]["spec"]["containers"][0]["image"] \
        == "vibecode/seaweedfs:4.48"
    assert not any(d["metadata"]["name"].startswith("authelia") for d in docs)


# ------------------------------------------------------------------ Kubernetes and CRD schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_object_validates_against_kubernetes_schemas(all_on, version):
    problems, by_k8s = [], set()
    for doc in all_on:
        if not is_crd_kind(doc):
            problems += kubernetes_problems(doc, version)
            by_k8s.add(doc["kind"])
    assert problems == []
    assert {"Namespace", "Deployment", "StatefulSet", "NetworkPolicy", "Secret", "ClusterRole"} <= by_k8s


def test_every_custom_object_validates_against_its_upstream_crd(all_on):
    """Skips where the upstream CRD schemas are not on the machine (they are not vendored)."""
    problems, by_crd = [], set()
    for doc in all_on:
        if is_crd_kind(doc):
            problems += crd_problems(doc)
            by_crd.add(doc["kind"])
    assert problems == []
    assert by_crd == CRD_KINDS


def test_the_crd_validator_catches_what_the_api_server_would_refuse(all_on):
    """Not evaluated: the CEL rules (x-kubernetes-validations), counted here. Everything else is."""
    gw = json.loads(json.dumps(_one(all_on, "Gateway", "vibecode")))
    gw["spec"]["listeners"][0]["bogus"] = 1
    gw["spec"]["listeners"][1]["port"] = 70000
    problems = " | ".join(crd_problems(gw))
    assert "'bogus' was unexpected" in problems and "70000" in problems
    sp = json.loads(json.dumps(_one(all_on, "SecurityPolicy", "workspace-sso")))
    sp["spec"]["extAuth"]["failOpen"] = "no"
    assert any("failOpen" in p or "'no' is not of type" in p for p in crd_problems(sp))
    cert = json.loads(json.dumps(_one(all_on, "Certificate", "vibecode-ca")))
    cert["spec"]["privateKey"]["algorithm"] = "DSA"
    assert crd_problems(cert)
    assert cel_rules("gateway.networking.k8s.io/v1", "Gateway") > 0  # what the API server adds


# ----------------------------------------------------------------------------- Pod Security


def test_every_pod_meets_pod_security_restricted(all_on):
    pods = pod_specs(all_on)
    assert {n for n, _ in pods} == {"Deployment/authelia", "StatefulSet/authelia-postgresql",
                                     "StatefulSet/authelia-redis", "StatefulSet/seaweedfs"}
    for name, pod in pods:
        assert restricted_violations(pod) == [], name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])


def test_namespaces_carry_pod_security_labels_and_are_kept(all_on):
    ns = {d["metadata"]["name"]: d["metadata"] for d in all_on if d["kind"] == "Namespace"}
    assert ns[WNS]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns[PNS]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns[ONS]["labels"]["vibecode.dev/ops"] == "true"
    for name, meta in ns.items():
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep", name
        assert meta["labels"]["kubernetes.io/metadata.name"] == name
        assert meta["labels"]["pod-security.kubernetes.io/warn"] == "restricted"


# ------------------------------------------------------------------------------ Authelia


# An addr-spec without display name. jsonschema's own "email" check only looks for an "@", under
# which Authelia's `sender: oneOf [email, "Name <addr>"]` would match both branches and fail.
ADDR_SPEC = re.compile(r"^[A-Za-z0-9._~!#$%&'*/=?^{|}+-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")


@pytest.fixture(scope="session")
def authelia_validator():
    schema = json.loads(require_upstream(AUTHELIA_SCHEMA).read_text())
    checker = jsonschema.FormatChecker()
    checker.checks("email")(lambda value: not isinstance(value, str) or bool(ADDR_SPEC.match(value)))
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


def _errors(validator, config):
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(config)]


@pytest.mark.parametrize("values", [ALL_ON, None], ids=["smtp", "filesystem-notifier"])
def test_authelia_configuration_validates_against_its_4_39_schema(helm, vals_dir, authelia_validator, values):
    docs = render(helm, PLATFORM_CHART, values, tmp=vals_dir) if values else render(helm, PLATFORM_CHART)
    config = _config(docs)
    assert _errors(authelia_validator, config) == []
    assert ("smtp" if values else "filesystem") in config["notifier"]


def test_the_authelia_schema_check_can_fail(all_on, authelia_validator):
    config = _config(all_on)
    config["session"]["cookies"][0]["domian"] = "x"
    config["access_control"]["default_policy"] = "allow"
    errors = " | ".join(_errors(authelia_validator, config))
    assert "domian" in errors and "allow" in errors


def test_authelia_configuration_is_what_the_platform_needs(all_on):
    c = _config(all_on)
    assert c["access_control"]["default_policy"] == "deny"
    assert c["authentication_backend"]["file"]["path"] == "/users/users_database.yml"
    assert c["authentication_backend"]["file"]["password"]["argon2"]["variant"] == "argon2id"
    assert c["session"]["redis"]["host"] == f"authelia-redis.{PNS}.svc.cluster.local"
    assert c["session"]["cookies"] == [{"domain": "vibecode.dev", "authelia_url": "https://auth.vibecode.dev"}]
    assert c["storage"]["postgres"]["address"] == f"tcp://authelia-postgresql.{PNS}.svc.cluster.local:5432"
    assert c["notifier"]["smtp"]["address"] == "submission://smtp.example.org:587"
    assert c["regulation"]["max_retries"] == 3
    assert c["server"]["endpoints"]["authz"] == {
        "ext-authz": {"implementation": "ExtAuthz", "authn_strategies": [{"name": "CookieSession"}]}}


# Authelia's secret options (its "secrets" configuration method names them by these last words).
SECRET_NAMES = {"secret", "jwt_secret", "password", "encryption_key", "hmac_secret", "key", "private_key",
                "certificate_chain", "token", "sentinel_password", "integration_key", "secret_key"}


def test_authelia_configuration_holds_no_secret_and_reads_each_from_a_file(all_on):
    config = _config(all_on)

    def keys(node, where=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(v, (dict, list)):
                    yield f"{where}.{k}", k
                yield from keys(v, f"{where}.{k}")
        elif isinstance(node, list):
            for v in node:
                yield from keys(v, where)

    leaves = list(keys(config))
    assert len(leaves) > 40
    assert [w for w, k in leaves if k in SECRET_NAMES] == []
    pod = _one(all_on, "Deployment", "authelia")["spec"]["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert all("value" in e and "valueFrom" not in e for e in env.values())
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for vol in ("secrets", "smtp"):
        for item in volumes[vol]["secret"]["items"]:
            files[f"{mounts[vol]}/{item['path']}"] = (volumes[vol]["secret"]["secretName"], item["key"])
    want = {k: (f"/secrets/{v}" if k != "AUTHELIA_NOTIFIER_SMTP_PASSWORD_FILE" else "/smtp/smtp-password")
            for k, v in {**AUTHELIA_SECRET_FILES, "AUTHELIA_NOTIFIER_SMTP_PASSWORD_FILE": ""}.items()}
    assert {k: e["value"] for k, e in env.items()} == want
    for path in want.values():
        secret, key = files[path]
        assert (secret, key) in {("vibecode-platform-secrets", k) for k in SECRET_KEYS} | {("vibecode-smtp", "smtp-password")}
    # The users Secret is mounted, never rendered (onboarding owns its content).
    assert volumes["users"]["secret"]["secretName"] == "authelia-users"
    assert volumes["config"]["secret"]["secretName"] == "authelia-config"
    assert c["args"] == ["--config", "/config/configuration.yml"]


# The access rules as a table: (who, factors, groups, url, allowed).
ACCESS_TABLE = [
    ("alice", 2, ("users",), "https://alice.vibecode.dev/", True),
    ("alice", 2, ("users",), "https://alice.vibecode.dev/stable-1/static/x.js?v=1", True),
    ("alice", 1, ("users",), "https://alice.vibecode.dev/", False),             # one factor
    ("bob", 2, ("users",), "https://alice.vibecode.dev/", False),               # another user
    ("root-admin", 2, ("admins", "users"), "https://alice.vibecode.dev/", False),  # an admin
    ("alice-x", 2, ("users",), "https://alice.vibecode.dev/", False),           # a prefix is not her
    ("alice", 2, ("users",), "https://alice-x.vibecode.dev/", False),           # nor the other way
    ("alice", 2, ("alice",), "https://bob.vibecode.dev/", False),               # a group named like a user
    (None, 0, (), "https://alice.vibecode.dev/", False),                        # nobody
    ("alice", 2, ("users",), "https://alice.evil.vibecode.dev/", False),        # deeper names: default deny
    ("alice", 2, ("users",), "https://alice.vibecode.dev.evil.org/", False),
    ("alice", 2, ("users",), "https://prefect.vibecode.dev/", False),           # platform hosts: not workspaces
    (None, 0, (), "https://auth.vibecode.dev/", True),                          # the portal
    ("alice", 1, ("users",), "https://auth.vibecode.dev/api/state", True),
]


@pytest.mark.parametrize("who, factors, groups, url, allowed", ACCESS_TABLE)
def test_access_rules_table(all_on, who, factors, groups, url, allowed):
    decision = decide(_config(all_on)["access_control"], url, Subject(who, groups, factors))
    assert decision.allowed is allowed, str(decision)


def test_an_anonymous_request_for_a_workspace_is_sent_to_sign_in(all_on):
    d = decide(_config(all_on)["access_control"], "https://alice.vibecode.dev/", Subject())
    assert d.policy == "two_factor" and d.sign_in and not d.allowed


def test_no_rule_names_a_user_or_a_group(all_on):
    """One rule for everyone: nothing changes per hire, and no group opens another's workspace."""
    rules = _config(all_on)["access_control"]["rules"]
    assert [r["policy"] for r in rules] == ["bypass", "two_factor"]
    assert all("subject" not in r for r in rules)


# --------------------------------------------------------------------- Gateway, certificates


def test_gateway_listeners_and_label(all_on):
    gw = _one(all_on, "Gateway", "vibecode")
    assert gw["metadata"]["labels"][GATEWAY_LABEL] == "platform"
    listeners = {lst["name"]: lst for lst in gw["spec"]["listeners"]}
    assert listeners["portal"]["hostname"] == "auth.vibecode.dev"
    assert listeners["portal"]["allowedRoutes"]["namespaces"] == {"from": "Same"}
    assert listeners["workspaces"]["hostname"] == "*.vibecode.dev"
    assert listeners["workspaces"]["allowedRoutes"]["namespaces"] == {
        "from": "Selector", "selector": {"matchLabels": {"kubernetes.io/metadata.name": WNS}}}
    assert listeners["workspaces"]["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "vibecode-workspaces-tls"}]
    assert listeners["hr"]["hostname"] == "hr.vibecode.dev"
    assert listeners["hr"]["allowedRoutes"]["namespaces"] == {"from": "Same"}  # the platform namespace only
    assert listeners["hr"]["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "vibecode-hr-tls"}]
    assert listeners["http"]["port"] == 80


def _listener_for(listeners: list[dict], host: str) -> str | None:
    """The HTTPS listener a request for ``host`` is given to, per the Gateway API's rule for
    listeners on one port: an exact hostname over a wildcard, a longer wildcard suffix over a
    shorter one; ``*.d`` matches one or more labels before ``d``, never ``d`` itself."""
    best, rank = None, -1
    for lst in listeners:
        name = lst.get("hostname")
        if lst["protocol"] != "HTTPS" or name is None:
            continue
        if name == host:
            score = 10_000
        elif name.startswith("*.") and host.endswith(name[1:]) and len(host) > len(name) - 1:
            score = len(name)
        else:
            continue
        if score > rank:
            best, rank = lst["name"], score
    return best


@pytest.mark.parametrize("host, listener", [
    ("hr.vibecode.dev", "hr"), ("auth.vibecode.dev", "portal"), ("alice.vibecode.dev", "workspaces"),
    ("hr-x.vibecode.dev", "workspaces"), ("x.hr.vibecode.dev", "workspaces"), ("vibecode.dev", None),
])
def test_listener_precedence_exact_hostnames_win_over_the_wildcard(all_on, host, listener):
    assert _listener_for(_one(all_on, "Gateway", "vibecode")["spec"]["listeners"], host) == listener


def test_the_hr_listener_is_not_behind_extauthz(all_on):
    """Machines authenticate to the HR gateway with HMAC signatures and a SCIM bearer token;
    Authelia would answer them with a sign-in redirect. hr.<domain> is also matched by the
    wildcard, so what keeps it out of ExtAuthz is (1) the SecurityPolicy naming the workspace
    listener by sectionName, never the whole Gateway, and (2) the exact hr listener taking the
    host over the wildcard (above)."""
    listeners = _one(all_on, "Gateway", "vibecode")["spec"]["listeners"]
    assert _listener_for(listeners, "hr.vibecode.dev") == "hr"
    targets = [ref for d in all_on if d["kind"] == "SecurityPolicy" for ref in d["spec"]["targetRefs"]]
    assert targets and all(ref["kind"] == "Gateway" and "sectionName" in ref for ref in targets)
    guarded = {ref["sectionName"] for ref in targets}
    assert guarded == {"workspaces"} and "hr" not in guarded
    assert _listener_for(listeners, "alice.vibecode.dev") in guarded  # the check bites on a workspace


def test_no_username_can_take_a_platform_listeners_host(all_on):
    """A person's workspace is <username>.<domain>: every exact host of the Gateway must be a
    reserved username, or someone named like it would have their route on the wildcard listener
    shadowed (and a workspace host collide with a platform one)."""
    hosts = [lst["hostname"] for lst in _one(all_on, "Gateway", "vibecode")["spec"]["listeners"]
             if lst.get("hostname") and not lst["hostname"].startswith("*.")]
    labels = {h.removesuffix(".vibecode.dev") for h in hosts}
    assert labels == {"auth", "hr"}
    assert labels <= RESERVED_USERNAMES


def test_every_workspace_request_goes_to_authelia_and_the_portal_does_not(all_on):
    sp = _one(all_on, "SecurityPolicy", "workspace-sso")["spec"]
    assert sp["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "vibecode",
                                 "sectionName": "workspaces"}]
    ext = sp["extAuth"]
    assert ext["failOpen"] is False
    assert ext["http"]["path"] == "/api/authz/ext-authz/"
    assert ext["http"]["backendRefs"] == [{"name": "authelia", "port": 9091}]
    assert ext["http"]["headersToBackend"] == ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"]
    assert "cookie" in ext["headersToExtAuth"]
    policies = [d for d in all_on if d["kind"] == "SecurityPolicy"]
    assert len(policies) == 1  # nothing targets the portal listener (it would loop)
    # Same namespace as the Gateway and Authelia's Service: no ReferenceGrant needed, none rendered.
    assert _one(all_on, "Service", "authelia")["metadata"]["namespace"] == PNS
    assert not [d for d in all_on if d["kind"] == "ReferenceGrant"]


def test_the_portal_route_and_the_websocket_timeouts(all_on):
    route = _one(all_on, "HTTPRoute", "authelia-portal")["spec"]
    assert route["parentRefs"] == [{"name": "vibecode", "sectionName": "portal"}]
    assert route["hostnames"] == ["auth.vibecode.dev"]
    ctp = _one(all_on, "ClientTrafficPolicy", "vibecode-timeouts")["spec"]
    assert ctp["timeout"]["http"]["streamIdleTimeout"] == "3600s"


def test_the_certificate_chain(all_on):
    selfsigned = _one(all_on, "ClusterIssuer", "vibecode-ca-selfsigned")
    assert selfsigned["spec"] == {"selfSigned": {}}
    ca = _one(all_on, "Certificate", "vibecode-ca")
    assert ca["metadata"]["namespace"] == "cert-manager"
    spec = ca["spec"]
    assert spec["isCA"] is True and spec["secretName"] == "vibecode-ca"
    assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
    assert spec["subject"]["organizations"] == ["VibeCode"] and spec["commonName"]
    assert spec["issuerRef"]["name"] == "vibecode-ca-selfsigned"
    assert _one(all_on, "ClusterIssuer", "vibecode-ca")["spec"] == {"ca": {"secretName": "vibecode-ca"}}
    acme = _one(all_on, "ClusterIssuer", "vibecode-ca-acme")["spec"]["acme"]
    assert acme["email"] == "ops@example.org"
    wildcard, portal = acme["solvers"]
    assert wildcard["selector"]["dnsNames"] == ["*.vibecode.dev"] and "cloudflare" in wildcard["dns01"]
    assert portal["http01"]["gatewayHTTPRoute"]["parentRefs"][0]["sectionName"] == "http"
    assert portal["selector"]["dnsNames"] == ["auth.vibecode.dev", "hr.vibecode.dev"]  # HTTP-01: exact names
    for name, host in (("vibecode-portal", "auth.vibecode.dev"), ("vibecode-workspaces", "*.vibecode.dev"),
                       ("vibecode-hr", "hr.vibecode.dev")):
        cert = _one(all_on, "Certificate", name)["spec"]
        assert cert["dnsNames"] == [host] and cert["issuerRef"]["name"] == "vibecode-ca-acme"


def test_without_acme_the_listeners_use_the_local_ca(helm):
    docs = render(helm, PLATFORM_CHART)
    assert not [d for d in docs if d["metadata"]["name"] == "vibecode-ca-acme"]
    assert _one(docs, "Certificate", "vibecode-workspaces")["spec"]["issuerRef"]["name"] == "vibecode-ca"
    hr = _one(docs, "Certificate", "vibecode-hr")["spec"]
    assert hr["issuerRef"]["name"] == "vibecode-ca" and hr["dnsNames"] == ["hr.vibecode.dev"]
    assert hr["secretName"] == "vibecode-hr-tls"


def test_the_hr_host_and_its_secret_are_values(helm, vals_dir):
    docs = render(helm, PLATFORM_CHART, {"hr": {"host": "people.vibecode.dev"},
                                         "certificates": {"hrSecret": "people-tls"}}, tmp=vals_dir)
    hr = next(lst for lst in _one(docs, "Gateway", "vibecode")["spec"]["listeners"] if lst["name"] == "hr")
    assert hr["hostname"] == "people.vibecode.dev"
    assert hr["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "people-tls"}]
    assert _one(docs, "Certificate", "vibecode-hr")["spec"]["dnsNames"] == ["people.vibecode.dev"]


def test_acme_over_rfc2136_renders_and_validates(helm, vals_dir):
    values = {"certificates": {"acme": {"enabled": True, "email": "ops@example.org", "dns01": {
        "provider": "rfc2136", "rfc2136": {"nameserver": "192.0.2.53:53", "tsigKeyName": "vibecode"}}}}}
    issuer = _one(render(helm, PLATFORM_CHART, values, tmp=vals_dir), "ClusterIssuer", "vibecode-ca-acme")
    assert issuer["spec"]["acme"]["solvers"][0]["dns01"]["rfc2136"]["nameserver"] == "192.0.2.53:53"
    assert crd_problems(issuer) == []


# --------------------------------------------------------------------------------- RBAC


def test_rbac_rules_are_the_builders_table_bound_to_the_flows_account(all_on):
    for scope, ns in (("workspaces", WNS), ("platform", PNS)):
        assert _one([d for d in all_on if d["metadata"].get("namespace") == ns], "Role", "vibecode-flows")["rules"] \
            == FLOWS_RULES[scope]
    assert _one(all_on, "ClusterRole", "vibecode-flows")["rules"] == FLOWS_RULES["cluster"]
    assert DEFAULTS_YAML["rbac"]["rules"] == FLOWS_RULES
    for d in all_on:
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert d["subjects"] == [{"kind": "ServiceAccount", "name": "vibecode-flows", "namespace": ONS}]
    verbs = {v for rules in FLOWS_RULES.values() for r in rules for v in r["verbs"]}
    assert not verbs & {"escalate", "bind", "impersonate", "*"}
    assert all("*" not in r["resources"] and "*" not in r["apiGroups"] for rs in FLOWS_RULES.values() for r in rs)


# ------------------------------------------------------------------------- NOTES


def test_notes_name_the_components_and_the_secrets(helm):
    proc = helm("install", "vibecode-platform", str(PLATFORM_CHART), "--dry-run=client", "-n", "default",
                "--set", "authelia.enabled=false")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "authelia          off" in notes
    assert "vibecode-platform/vibecode-platform-secrets" in notes and "vibecode-platform/authelia-users" in notes
    assert "vibecode ca" in notes and "label vibecode.dev/gateway=platform" in notes


# ------------------------------------------------------------------- NetworkPolicies (nca)


def _topology():
    ns, pod = netpol.namespace, netpol.pod
    core = {"app.kubernetes.io/part-of": "vibecode"}
    return [
        ns(PNS), ns(WNS), ns(ONS, **{"vibecode.dev/ops": "true"}), ns("envoy-gateway-system"), ns("kube-system"),
        ns("prefect"), ns("cert-manager"),
        pod(WNS, "ws-alice", **core, **{"app.kubernetes.io/name": "code-server", "vibecode.dev/user": "alice"}),
        pod(WNS, "ws-bob", **core, **{"app.kubernetes.io/name": "code-server", "vibecode.dev/user": "bob"}),
        pod(WNS, "backup-alice", **core, **{"app.kubernetes.io/component": "backup", "vibecode.dev/user": "alice"}),
        pod(WNS, "prerestore-bob", **core, **{"app.kubernetes.io/component": "prerestore", "vibecode.dev/user": "bob"}),
        pod(WNS, "restore-bob", **core, **{"app.kubernetes.io/component": "restore", "vibecode.dev/user": "bob"}),
        pod(WNS, "stray", app="debug"),
        pod(PNS, "authelia", **core, **{"app.kubernetes.io/name": "authelia"}),
        pod(PNS, "postgresql", **core, **{"app.kubernetes.io/name": "authelia-postgresql"}),
        pod(PNS, "redis", **core, **{"app.kubernetes.io/name": "authelia-redis"}),
        pod(PNS, "seaweedfs", **core, **{"app.kubernetes.io/name": "seaweedfs"}),
        pod(PNS, "totp-carol", **core, **{"app.kubernetes.io/component": "totp-provision"}),
        pod(PNS, "stray", app="debug"),
        pod(PNS, "cm-acme-http-solver", **{"acme.cert-manager.io/http01-solver": "true"}),
        pod("envoy-gateway-system", "envoy", **{"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
                                                "app.kubernetes.io/managed-by": "envoy-gateway"}),
        pod("envoy-gateway-system", "controller", **{"app.kubernetes.io/name": "gateway-helm"}),
        pod("kube-system", "coredns", **{"k8s-app": "kube-dns"}),
        pod("kube-system", "other", app="metrics"),
        pod(ONS, "prober", app="flows"),
        # The HR gateway, released in the platform namespace by bootstrap (tasks/platform/releases.py).
        pod(PNS, "hr-gateway", **core, **{"app.kubernetes.io/name": "vibecode-gateway"}),
        pod("prefect", "prefect-server", **{"app.kubernetes.io/name": "prefect-server"}),
        pod("cert-manager", "cert-manager", app="cert-manager"),
    ]


OURS = (PNS + "/", WNS + "/")
HR_GATEWAY_CHART = PLATFORM_CHART.parents[1] / "deployments" / "gateway"
TCP = "{{protocols:TCP,dst_ports:{}}}"
DNS = "{protocols:TCP, UDP,dst_ports:53}"


def _expected(values: dict, *, s3: str | None = None) -> set[tuple[str, str, str]]:
    n = values["networkPolicies"]
    outside = netpol.ranges_outside(n["podCIDRs"] + n["serviceCIDRs"] + n["nodeCIDRs"] + n["deniedCIDRs"])
    proxy, ops, dns = "envoy-gateway-system/envoy", f"{ONS}/prober", "kube-system/coredns"
    ws = [f"{WNS}/ws-alice", f"{WNS}/ws-bob"]
    jobs = [f"{WNS}/backup-alice", f"{WNS}/prerestore-bob", f"{WNS}/restore-bob"]
    a, pg, rd, sw, totp = (f"{PNS}/{x}" for x in ("authelia", "postgresql", "redis", "seaweedfs", "totp-carol"))
    table = set()
    for w in ws:
        table |= {(proxy, w, TCP.format(8080)), (ops, w, TCP.format(8080)), (w, dns, DNS)}
        table |= {(w, r, "All connections") for r in outside}
    for j in jobs:
        table.add((j, dns, DNS))
        if s3 is None:
            table.add((j, sw, TCP.format(8333)))
        else:
            table |= {(j, r, TCP.format(s3)) for r in outside}
    if s3 is None:
        table.add((ops, sw, TCP.format(8333)))
    table |= {(proxy, a, TCP.format(9091)), (ops, a, TCP.format(9091)), (a, dns, DNS),
              (a, pg, TCP.format(5432)), (a, rd, TCP.format(6379)),
              (totp, pg, TCP.format(5432)), (totp, dns, DNS),
              (ops, pg, TCP.format(5432)), (ops, rd, TCP.format(6379))}
    table |= {(a, r, TCP.format(587)) for r in outside}
    # The HR gateway (deployments/gateway's own policy): in, Envoy's proxies only; out, Prefect,
    # DNS and the API server: its Service address and, after the plugin's translation, the nodes'.
    hr = f"{PNS}/hr-gateway"
    table |= {(proxy, hr, TCP.format(8080)), (hr, "prefect/prefect-server", TCP.format(4200)), (hr, dns, DNS),
              (hr, "10.96.0.1", "{protocols:TCP,dst_ports:443,6443}"),
              (hr, "172.18.0.0-172.18.255.255", "{protocols:TCP,dst_ports:443,6443}")}
    if values["certificates"]["acme"]["enabled"]:
        table.add((proxy, f"{PNS}/cm-acme-http-solver", TCP.format(8089)))
    return table


def _hr_gateway_values() -> dict:
    """deployments/gateway's values exactly as bootstrap builds them (every platform part on)."""
    parts = {p: Verdict(True, "") for p in PLATFORM_PARTS}
    return desired_releases(Settings(), load_lock(), ClusterFacts(), parts)["hr-gateway"].values


def _policies(helm, vals_dir, values) -> list[dict]:
    docs = render(helm, PLATFORM_CHART, values, tmp=vals_dir)
    docs += render(helm, HR_GATEWAY_CHART, _hr_gateway_values(), release="vibecode-gateway", namespace=PNS,
                   tmp=vals_dir)
    # The workspace chart's own policy applies too (policies add up): render two workspaces.
    for user in ("alice", "bob"):
        docs += render(helm, WORKSPACE_CHART, None, "--set-string", f"username={user}", release=f"ws-{user}",
                       namespace=WNS)
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _ours(conns):
    return {c for c in conns if c[0].startswith(OURS) or c[1].startswith(OURS)}


def test_network_policies_allow_exactly_the_table(helm, vals_dir, tmp_path):
    values = {**ALL_ON, "networkPolicies": DEFAULTS_YAML["networkPolicies"]}
    conns = netpol.connectivity(_policies(helm, vals_dir, values), _topology(), tmp_path)
    got = _ours(conns)
    want = _expected(values)
    assert sorted(got - want) == [] and sorted(want - got) == []
    # Said plainly: a workspace reaches none of these (API server endpoints are node addresses).
    outside_ranges = sorted({dst for src, dst, _ in got if src == f"{WNS}/ws-alice" and "/" not in dst})
    for address in ("172.18.0.2", "10.96.0.1", "10.244.1.7", "169.254.169.254"):
        assert not netpol.in_ranges(address, outside_ranges), address
    assert netpol.in_ranges("140.82.112.3", outside_ranges)  # the internet, e.g. a git host
    for dst in (f"{PNS}/authelia", f"{PNS}/postgresql", f"{PNS}/redis", f"{PNS}/seaweedfs", "prefect/prefect-server",
                f"{PNS}/hr-gateway", f"{WNS}/ws-bob", f"{ONS}/prober"):
        assert not any(s == f"{WNS}/ws-alice" and d == dst for s, d, _ in got), dst
    # The HR gateway: from Envoy's proxies on 8080, and from nothing else (not a workspace, not
    # another platform pod, not the ops namespace: it is reached through the Gateway only).
    into_hr = {(s, c) for s, d, c in conns if d == f"{PNS}/hr-gateway"}
    assert into_hr == {("envoy-gateway-system/envoy", TCP.format(8080))}
    for src in (f"{WNS}/ws-alice", f"{WNS}/backup-alice", f"{PNS}/authelia", f"{PNS}/seaweedfs", f"{PNS}/stray",
                f"{PNS}/totp-carol", f"{ONS}/prober", "envoy-gateway-system/controller", "kube-system/other"):
        assert not any(s == src and d == f"{PNS}/hr-gateway" for s, d, _ in conns), src


def test_with_an_external_s3_endpoint_backup_jobs_reach_it_and_seaweedfs_is_gone(helm, vals_dir, tmp_path):
    values = {**ALL_ON, "seaweedfs": {"externalEndpoint": "https://s3.example.org"},
              "networkPolicies": DEFAULTS_YAML["networkPolicies"]}
    got = _ours(netpol.connectivity(_policies(helm, vals_dir, values), _topology(), tmp_path))
    assert got == _expected(values, s3=443)


def test_the_netpol_table_check_can_fail(helm, vals_dir, tmp_path):
    """Without the default deny the analyser finds far more than the table: the check bites."""
    values = {**ALL_ON, "networkPolicies": DEFAULTS_YAML["networkPolicies"]}
    policies = [p for p in _policies(helm, vals_dir, values) if p["metadata"]["name"] != "default-deny"]
    got = _ours(netpol.connectivity(policies, _topology(), tmp_path))
    extra = got - _expected(values)
    assert (f"{PNS}/stray", "prefect/prefect-server", "All connections") in extra
