"""The Helm chart, rendered in-process with the Helm SDK and checked the way a cluster would.

Every scenario (the defaults and each ``ci/*-values.yaml``) is rendered, every manifest is
validated strictly against the Kubernetes OpenAPI schema, the RBAC is checked for least
privilege, and the rendered ``config.yaml`` is fed to ``posthog-receiver check-config`` with
the mounted secret files present, so the chart and the settings model cannot drift apart.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from receiver import cli
from receiver.config import ENV_PREFIX, load_settings

CHART = Path(__file__).resolve().parents[1] / "helm" / "posthog-incident-receiver"
RULES_FILE = CHART / "files" / "posthog-rules.yaml"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
# The oldest Kubernetes the chart supports (kubeVersion in Chart.yaml: PodDisruptionBudget's
# unhealthyPodEvictionPolicy is on by default from 1.27) and a recent one.
KUBE_VERSIONS = ("1.27", "1.31")
RELEASE = "rcv"
NAMESPACE = "monitoring"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: not in the Kubernetes schema

SCENARIOS = ["default", *sorted(p.name.removesuffix("-values.yaml") for p in CHART.glob("ci/*"))]


def scenario_values(scenario: str) -> dict[str, Any]:
    if scenario == "default":
        return {}
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text())
    return values


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests for ``values``, as parsed objects (NOTES.txt left out)."""
    out = _chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


@functools.cache
def _rendered_json(scenario: str) -> str:
    return json.dumps(render(scenario_values(scenario)))


def rendered(scenario: str) -> list[dict[str, Any]]:
    """Cached rendering of one scenario (a fresh copy each time, tests may modify it)."""
    docs: list[dict[str, Any]] = json.loads(_rendered_json(scenario))
    return docs


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def receiver_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["receiver"]
    container: dict[str, Any] = containers[0]
    return container


def rendered_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(only(docs, "ConfigMap")["data"]["config.yaml"])
    return config


def file_refs(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """Every ``{file: ...}`` secret source in a config, with where it sits."""
    refs: list[tuple[tuple[str, ...], str]] = []
    if isinstance(node, dict):
        if set(node) == {"file"} and isinstance(node["file"], str):
            return [(path, node["file"])]
        for key, value in node.items():
            refs.extend(file_refs(value, (*path, str(key))))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            refs.extend(file_refs(value, (*path, str(i))))
    return refs


def _normalise(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """RBAC rules as (apiGroup, resource, verb, resourceNames) facts, one per combination."""
    facts = set()
    for rule in rules:
        names = tuple(sorted(rule.get("resourceNames", [])))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    facts.add((group, resource, verb, names))
    return facts


@functools.cache
def kubernetes_problem(manifest: str, version: str) -> str | None:
    """Why ``manifest`` (JSON) is not valid for Kubernetes ``version``, or None.

    Cached: most manifests are the same in every scenario, and a validation reads the whole
    OpenAPI definition file.
    """
    try:
        kubernetes_validate.validate(json.loads(manifest), version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
    return None


# --- every scenario: renders, validates, lints -------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_is_valid_kubernetes(scenario: str) -> None:
    """Each rendered manifest passes kubernetes-validate in strict mode (no unknown fields)."""
    docs = rendered(scenario)
    assert docs
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        for version in KUBE_VERSIONS:
            problem = kubernetes_problem(json.dumps(doc, sort_keys=True), version)
            assert problem is None, (
                f"{doc['kind']}/{doc['metadata']['name']} ({version}): {problem}"
            )


def test_validated_versions_start_at_the_supported_minimum() -> None:
    """The oldest Kubernetes validated against is the chart's declared minimum."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}.0-0"


def test_strict_validation_catches_a_misplaced_field() -> None:
    """A field Kubernetes does not know (a typo, a wrong indent) fails strict validation."""
    deployment = only(rendered("default"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"path": "/readyz"}
    problem = kubernetes_problem(json.dumps(deployment, sort_keys=True), KUBE_VERSIONS[0])
    assert problem is not None
    assert "readinesProbe" in problem


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints_clean(scenario: str) -> None:
    """`helm lint --strict` reports no warnings or errors for the scenario's values."""
    report = helm.lint(CHART, scenario_values(scenario) or None, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_values_validate_against_the_schema(scenario: str) -> None:
    """The defaults merged with each scenario satisfy values.schema.json."""
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    values = deep_merge(DEFAULTS, scenario_values(scenario))
    jsonschema.Draft7Validator(SCHEMA).validate(values)


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"persistence": {"type": "nfs"}}, "persistence/type"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"ha": {"enabled": True}}, "ha/postgres/existingSecret"),
        (
            {"ha": {"enabled": True, "replicas": 1, "postgres": {"existingSecret": "db"}}},
            "ha/replicas",
        ),
        ({"ha": {"leaseName": "rcv-leader"}}, "leaseName"),  # no Kubernetes Lease
        ({"ha": {"evidence": {"type": "hostPath"}}}, "ha/evidence/type"),
        (
            {"ha": {"topologySpread": {"whenUnsatisfiable": "Never"}}},
            "ha/topologySpread/whenUnsatisfiable",
        ),
        ({"rbac": {"create": "yes"}}, "rbac/create"),
        ({"integration": {"deployment": "Not_A_Name"}}, "integration/deployment"),
        ({"image": {"pullPolicy": "Sometimes"}}, "image/pullPolicy"),
        ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext/runAsUser"),
        ({"service": {"port": 80}}, "service/port"),
        ({"drill": {"enabled": True, "schedule": "weekly"}}, "drill/schedule"),
    ],
)
def test_schema_rejects_bad_values(override: dict[str, Any], complaint: str) -> None:
    """Wrong types, unknown keys and bad enums are refused."""
    values = deep_merge(DEFAULTS, override)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(values)
    with pytest.raises(helm.HelmValuesError) as caught:
        _chart().render(override, name=RELEASE, namespace=NAMESPACE)
    assert complaint in str(caught.value)


def _walk_values(
    values: dict[str, Any], schema: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], dict[str, Any] | None]]:
    out: list[tuple[tuple[str, ...], dict[str, Any] | None]] = []
    props = schema.get("properties")
    if props is None:  # a free-form mapping (Kubernetes objects, the receiver's config)
        return out
    for key, value in values.items():
        sub = props.get(key)
        out.append(((*path, key), sub))
        if sub is not None and isinstance(value, dict):
            out.extend(_walk_values(value, sub, (*path, key)))
    return out


def test_every_value_is_described_in_the_schema() -> None:
    """Each key of values.yaml has a schema entry with a description."""
    undocumented = [
        ".".join(path)
        for path, sub in _walk_values(DEFAULTS, SCHEMA)
        if sub is None or not sub.get("description")
    ]
    assert not undocumented


def test_every_value_is_commented_in_values_yaml() -> None:
    """Each key of values.yaml has a comment directly above it (or above its mapping)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    free_form = {
        path
        for path, sub in _walk_values(DEFAULTS, SCHEMA)
        if sub is not None and "properties" not in sub
    }
    uncommented = []
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = tuple(k for _, k in stack)
        stack.append((indent, key))
        if any(parents[: i + 1] in free_form for i in range(len(parents))):
            continue  # inside a free-form Kubernetes object documented as a whole
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            uncommented.append(".".join((*parents, key)))
    assert not uncommented, uncommented


# --- RBAC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_namespaced_without_wildcards(scenario: str) -> None:
    """No cluster-scoped RBAC, no `*` anywhere, and every binding names only our ServiceAccount."""
    docs = rendered(scenario)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    sa = only(docs, "ServiceAccount")["metadata"]["name"]
    for role in of_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not rule.get("nonResourceURLs")
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
        ]
        role = next(
            r for r in of_kind(docs, "Role") if r["metadata"]["name"] == binding["roleRef"]["name"]
        )
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]


# Resources whose objects Kubernetes names for us (generated pod names, event names) or verbs
# that cannot be limited by name (create, list): resourceNames is impossible there.
UNNAMEABLE = {("", "pods"), ("", "pods/log"), ("", "events")}
UNNAMEABLE_VERBS = {"create", "list", "watch", "deletecollection"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_uses_resource_names_wherever_kubernetes_allows(scenario: str) -> None:
    """Every rule that Kubernetes can restrict by object name is restricted by name."""
    for role in of_kind(rendered(scenario), "Role"):
        for group, resource, verb, names in _normalise(role["rules"]):
            if (group, resource) in UNNAMEABLE or verb in UNNAMEABLE_VERBS:
                continue
            assert names, (
                f"{role['metadata']['name']}: {verb} {group}/{resource} without resourceNames"
            )


def test_default_role_grants_exactly_the_runbook_steps() -> None:
    """Defaults: get/patch the Deployment, read pods, logs and the key Secret, write Events."""
    docs = rendered("default")
    (role,) = of_kind(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _normalise(role["rules"]) == {
        ("apps", "deployments", "get", ("posthog-integration",)),
        ("apps", "deployments", "patch", ("posthog-integration",)),
        ("", "pods", "list", ()),
        ("", "pods/log", "get", ()),
        ("", "secrets", "get", ("posthog-secrets",)),
        ("", "events", "create", ()),
        ("", "events", "list", ()),
    }


KUBE_PACKAGE = Path(__file__).resolve().parents[1] / "receiver" / "kube"
# kubernetes_asyncio method verb -> RBAC verb; the object kind -> RBAC resource.
API_VERBS = {"read": "get", "list": "list", "patch": "patch", "create": "create",
             "replace": "update", "delete": "delete"}  # fmt: skip
API_RESOURCES = {"deployment": "deployments", "secret": "secrets", "pod": "pods",
                 "pod_log": "pods/log", "event": "events", "lease": "leases"}  # fmt: skip


def test_role_grants_exactly_the_calls_the_receiver_makes() -> None:
    """With every action enabled, the Role grants each Kubernetes call in receiver.kube, no more."""
    calls = set()
    for source in KUBE_PACKAGE.glob("*.py"):
        for verb, kind in re.findall(r"\.(\w+?)_namespaced_(\w+)\(", source.read_text()):
            assert verb in API_VERBS, f"{source.name}: {verb}_namespaced_{kind}"
            assert kind in API_RESOURCES, f"{source.name}: {verb}_namespaced_{kind}"
            calls.add((API_RESOURCES[kind], API_VERBS[verb]))
    assert calls, "the adapter makes Kubernetes calls"
    (role,) = of_kind(rendered("other-namespace"), "Role")  # remediation and key copy enabled
    granted = {(resource, verb) for _, resource, verb, _ in _normalise(role["rules"])}
    assert granted == calls


def test_role_follows_the_target_and_the_enabled_actions() -> None:
    """Another target namespace gets the Role; copying the key adds one named Secret patch."""
    docs = rendered("other-namespace")
    (role,) = of_kind(docs, "Role")
    (binding,) = of_kind(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == "posthog"
    assert binding["metadata"]["namespace"] == "posthog"
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    facts = _normalise(role["rules"])
    secret_facts = {f for f in facts if f[1] == "secrets"}
    assert secret_facts == {
        ("", "secrets", "get", ("posthog-secrets", "posthog-secrets-next")),
        ("", "secrets", "patch", ("posthog-secrets",)),
    }
    # Nothing in the release namespace: the receiver needs no access to its own namespace.
    assert all(r["metadata"]["namespace"] == "posthog" for r in of_kind(docs, "Role"))


def test_read_only_role_cannot_change_anything() -> None:
    """With remediation disabled the Role holds no verb that changes the integration."""
    (role,) = of_kind(rendered("read-only"), "Role")
    verbs = {(resource, verb) for _, resource, verb, _ in _normalise(role["rules"])}
    assert ("deployments", "get") in verbs
    assert not {v for v in verbs if v[1] in {"patch", "update", "delete"}}
    assert verbs - {("events", "create")} == {
        ("deployments", "get"),
        ("pods", "list"),
        ("pods/log", "get"),
        ("secrets", "get"),
        ("events", "list"),
    }


def test_replicas_that_would_act_alone_are_refused() -> None:
    """Without HA a second replica (its own SQLite file) fails to render, saying why and what
    to do instead."""
    values = {"replicaCount": 2}
    jsonschema.Draft7Validator(SCHEMA).validate(deep_merge(DEFAULTS, values))  # not a typo
    complaint = r"replicaCount=2 is refused: without HA each replica would .* ha\.enabled=true"
    with pytest.raises(helm.HelmRenderError, match=complaint):
        render(values)


@pytest.fixture(scope="module")
def chart_without_schema(tmp_path_factory: pytest.TempPathFactory) -> helm.Chart:
    """The chart as `helm install --skip-schema-validation` sees it: the templates alone."""
    copy_dir = tmp_path_factory.mktemp("chart") / CHART.name
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "values.schema.json").unlink()
    return helm.Chart.load(copy_dir)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"ha": {"enabled": True}}, r"ha\.enabled=true needs ha\.postgres\.existingSecret"),
        (
            {"ha": {"enabled": True, "replicas": 1, "postgres": {"existingSecret": "db-app"}}},
            r"ha\.replicas=1 is refused: HA needs 2 or more replicas",
        ),
    ],
)
def test_ha_without_its_database_or_a_second_replica_fails_to_render(
    chart_without_schema: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    """The schema refuses HA without the DSN Secret or with one replica; a render that skips
    the schema is refused by the templates, saying what is missing."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(deep_merge(DEFAULTS, values))
    with pytest.raises(helm.HelmRenderError, match=complaint):
        chart_without_schema.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_one_replica_by_default_and_none_when_stopped() -> None:
    """One pod by default, no Lease access; replicaCount=0 stops the receiver."""
    docs = rendered("default")
    assert only(docs, "Deployment")["spec"]["replicas"] == 1
    assert not any("leases" in str(r["rules"]) for r in of_kind(docs, "Role"))
    assert only(render({"replicaCount": 0}), "Deployment")["spec"]["replicas"] == 0
    container = receiver_container(docs)
    assert not [e for e in container.get("env", []) if e["name"].startswith("POSTHOG_RECEIVER")]


# --- high availability --------------------------------------------------------------------

HA = {"ha": {"enabled": True, "postgres": {"existingSecret": "posthog-receiver-db-app"}}}


def _volume(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    found: dict[str, Any] = volume
    return found


def test_ha_runs_replicas_on_postgres_from_an_existing_secret() -> None:
    """ha.enabled: three replicas by default (ha.replicas otherwise), store.backend postgres
    whose DSN file is the existing Secret's key mounted read-only; no SQLite claim, no
    Secret created for the database."""
    docs = render(HA)
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert (
        only(render(deep_merge(HA, {"ha": {"replicas": 2}})), "Deployment")["spec"]["replicas"] == 2
    )
    # replicaCount is the single-replica mode's; with HA it changes nothing.
    assert only(render(deep_merge(HA, {"replicaCount": 1})), "Deployment")["spec"]["replicas"] == 3

    store = rendered_config(docs)["store"]
    assert store["backend"] == "postgres"
    assert "path" not in store  # no SQLite file: the state is in PostgreSQL
    dsn = Path(store["postgres"]["dsn"]["file"])
    assert set(store["postgres"]["dsn"]) == {"file"}
    mount = next(
        m for m in receiver_container(docs)["volumeMounts"] if m["mountPath"] == str(dsn.parent)
    )
    assert mount["readOnly"] is True
    secret = _volume(docs, mount["name"])["secret"]
    assert secret["secretName"] == "posthog-receiver-db-app"
    assert secret["items"] == [{"key": "uri", "path": dsn.name}]
    assert secret["defaultMode"] == 0o440
    other_key = render(deep_merge(HA, {"ha": {"postgres": {"key": "dsn"}}}))
    assert _volume(other_key, mount["name"])["secret"]["items"] == [
        {"key": "dsn", "path": dsn.name}
    ]
    # The chart creates only its own credentials' Secret, never one for the database.
    assert [s["metadata"]["name"] for s in of_kind(docs, "Secret")] == [
        f"{RELEASE}-posthog-incident-receiver"
    ]
    assert not of_kind(docs, "PersistentVolumeClaim")
    assert "emptyDir" in _volume(docs, "state")


def test_ha_pods_name_themselves_in_the_leadership_lease() -> None:
    """Each replica's leadership identity is its pod name, from the downward API; extraEnv
    still follows."""
    extra = {"name": "POSTHOG_RECEIVER__LOGGING__LEVEL", "value": "debug"}
    docs = render(deep_merge(HA, {"extraEnv": [extra]}))
    env = receiver_container(docs)["env"]
    assert env == [
        {
            "name": "POSTHOG_RECEIVER__LEADERSHIP__IDENTITY",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
        extra,
    ]


def test_ha_rolls_one_pod_at_a_time_and_evicts_one_at_a_time() -> None:
    """RollingUpdate with a surge and no unavailable pod in HA (Recreate stays for SQLite);
    the PodDisruptionBudget lets one pod of the Deployment go at a time."""
    docs = rendered("ha")
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert only(rendered("default"), "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    pdb = only(docs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert "minAvailable" not in pdb
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert _matches(pdb["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert not of_kind(render(deep_merge(HA, {"podDisruptionBudget": {"enabled": False}})),
                       "PodDisruptionBudget")  # fmt: skip


def test_ha_spreads_replicas_over_nodes_and_zones() -> None:
    """Soft spread over nodes and zones by default, hard on request, per revision; a
    topologySpreadConstraints value replaces it; no spread without HA."""
    docs = rendered("ha")
    pod = only(docs, "Deployment")["spec"]["template"]
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for constraint in constraints:
        assert constraint["maxSkew"] == 1
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert (
            constraint["labelSelector"]["matchLabels"]
            == (only(docs, "Deployment")["spec"]["selector"]["matchLabels"])
        )
        assert _matches(constraint["labelSelector"], pod["metadata"]["labels"])
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]

    hard = render(
        deep_merge(HA, {"ha": {"topologySpread": {"whenUnsatisfiable": "DoNotSchedule"}}})
    )
    assert {
        c["whenUnsatisfiable"]
        for c in only(hard, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    } == {"DoNotSchedule"}
    own = [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}]  # fmt: skip
    replaced = render(deep_merge(HA, {"topologySpreadConstraints": own}))
    assert (
        only(replaced, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"] == own
    )
    off = render(deep_merge(HA, {"ha": {"topologySpread": {"enabled": False}}}))
    assert "topologySpreadConstraints" not in only(off, "Deployment")["spec"]["template"]["spec"]
    assert (
        "topologySpreadConstraints"
        not in (only(rendered("default"), "Deployment")["spec"]["template"]["spec"])
    )


def test_ha_needs_no_lease_rbac() -> None:
    """Leadership is a lease row in PostgreSQL: HA adds no Role, no rule, no Lease access."""
    ha, single = rendered("ha"), render(scenario_values("ha") | {"ha": {"enabled": False}})
    assert len(of_kind(ha, "Role")) == len(of_kind(single, "Role")) == 1
    assert _normalise(only(ha, "Role")["rules"]) == _normalise(only(single, "Role")["rules"])
    assert only(ha, "RoleBinding") == only(single, "RoleBinding")
    assert not any(
        "coordination.k8s.io" in rule["apiGroups"] or "leases" in rule["resources"]
        for role in of_kind(ha, "Role")
        for rule in role["rules"]
    )


def test_ha_evidence_on_a_shared_read_write_many_claim() -> None:
    """ha.evidence.type pvc: one ReadWriteMany claim, kept on uninstall, mounted by every
    replica where the config writes bundles; or an existing claim, created by nobody here."""
    values = deep_merge(
        HA, {"ha": {"evidence": {"type": "pvc", "pvc": {"storageClassName": "nfs", "size": "5Gi"}}}}
    )
    docs = render(values)
    claim = only(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == f"{RELEASE}-posthog-incident-receiver-evidence"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "nfs",
        "resources": {"requests": {"storage": "5Gi"}},
    }
    assert _volume(docs, "state")["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    evidence_dir = Path(rendered_config(docs)["evidence"]["directory"])
    mount = next(m for m in receiver_container(docs)["volumeMounts"] if m["name"] == "state")
    assert evidence_dir.is_relative_to(mount["mountPath"])
    for doc in docs:
        if doc["kind"] in ("PersistentVolumeClaim", "Deployment"):
            for version in KUBE_VERSIONS:
                assert kubernetes_problem(json.dumps(doc, sort_keys=True), version) is None
    existing = render(deep_merge(values, {"ha": {"evidence": {"pvc": {"existingClaim": "ev"}}}}))
    assert not of_kind(existing, "PersistentVolumeClaim")
    assert _volume(existing, "state")["persistentVolumeClaim"] == {"claimName": "ev"}


def test_ha_notes_say_where_leadership_shows() -> None:
    """The install notes name the replicas, the DSN Secret and that the API shows the leader;
    the single-replica notes say nothing of it."""
    out = _chart().render(scenario_values("ha"), name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = " ".join(next(text for path, text in out.items() if path.endswith("NOTES.txt")).split())
    assert "3 replicas share one PostgreSQL database" in notes
    assert "secret/posthog-receiver-db-app (key uri)" in notes
    assert "The API shows which pod leads and its term" in notes
    assert "emptyDir" not in notes
    out = _chart().render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
    assert "PostgreSQL" not in notes


def test_role_follows_the_rendered_config() -> None:
    """A remediation target changed through config values moves the Role's names with it."""
    target = {"deployment": "analytics-ingest", "api_key_secret": "analytics-posthog"}
    docs = render({"config": {"remediation": {"target": target}}})
    (role,) = of_kind(docs, "Role")
    assert rendered_config(docs)["remediation"]["target"]["deployment"] == "analytics-ingest"
    named = {(resource, verb): names for _, resource, verb, names in _normalise(role["rules"])}
    assert named[("deployments", "patch")] == ("analytics-ingest",)
    assert named[("secrets", "get")] == ("analytics-posthog",)


def test_rbac_can_be_left_to_the_operator() -> None:
    """rbac.create=false renders no Role or RoleBinding."""
    kinds = {d["kind"] for d in render({"rbac": {"create": False}})}
    assert not kinds & {"Role", "RoleBinding"}


# --- the pod ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_runs_locked_down(scenario: str) -> None:
    """Non-root, read-only root, no capabilities or escalation, seccomp RuntimeDefault."""
    docs = rendered(scenario)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = receiver_container(docs)
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged")
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_and_port_match_the_receiver_config(scenario: str) -> None:
    """Liveness hits /healthz and readiness /readyz on the port the receiver listens on."""
    docs = rendered(scenario)
    container = receiver_container(docs)
    config = rendered_config(docs)
    assert config["server"]["host"] == "0.0.0.0"
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": config["server"]["port"], "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = only(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        service["spec"]["selector"] == only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_writable_paths_are_volumes(scenario: str) -> None:
    """The SQLite file sits on the state volume, /tmp is an emptyDir; nothing else is writable."""
    docs = rendered(scenario)
    container = receiver_container(docs)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    config = rendered_config(docs)
    ha = deep_merge(DEFAULTS, scenario_values(scenario))["ha"]["enabled"]
    # The state volume: the SQLite file, its spool and the evidence; with HA the evidence only.
    store_dir = str(Path(config["evidence"]["directory"]).parent)
    if not ha:
        assert str(Path(config["store"]["path"]).parent) == store_dir
    assert store_dir in mounts
    assert not mounts[store_dir].get("readOnly")
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {store_dir, "/tmp"}
    state = volumes[mounts[store_dir]["name"]]
    if ha:
        assert "emptyDir" in state
        assert not of_kind(docs, "PersistentVolumeClaim")
        assert only(docs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
        return
    if deep_merge(DEFAULTS, scenario_values(scenario))["persistence"]["type"] == "pvc":
        claim = only(docs, "PersistentVolumeClaim")
        assert state["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    else:
        assert "emptyDir" in state
        assert not of_kind(docs, "PersistentVolumeClaim")
    # One pod at a time: one writer for the SQLite file on a ReadWriteOnce claim, and never
    # two receivers acting side by side during an upgrade.
    assert only(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_state_survives_the_pod_by_default() -> None:
    """Defaults: the state directory is a PersistentVolumeClaim kept on uninstall; emptyDir is
    an option, and the install notes say what it loses."""
    docs = rendered("default")
    claim = only(docs, "PersistentVolumeClaim")
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
    assert state == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    assert (
        claim["spec"]["resources"]["requests"]["storage"] == DEFAULTS["persistence"]["pvc"]["size"]
    )
    out = _chart().render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
    assert "emptyDir" not in notes
    ephemeral = rendered("emptydir")
    assert not of_kind(ephemeral, "PersistentVolumeClaim")
    out = _chart().render(
        scenario_values("emptydir"), name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
    for lost in ("journal of applied changes", "never reverted", "undelivered notifications",
                 "incident history"):  # fmt: skip
        assert lost in " ".join(notes.split())


def test_kill_switch_is_an_optional_config_map_the_config_watches() -> None:
    """The config's kill_switch_file lies in an optional ConfigMap volume: absent until thrown."""
    docs = rendered("default")
    switch = Path(rendered_config(docs)["remediation"]["kill_switch_file"])
    mount = next(m for m in receiver_container(docs)["volumeMounts"] if m["name"] == "kill-switch")
    assert str(switch.parent) == mount["mountPath"]
    assert mount["readOnly"] is True
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "kill-switch")
    assert volume["configMap"] == {
        "name": f"{RELEASE}-posthog-incident-receiver-kill-switch",
        "optional": True,
    }
    # The ConfigMap is the operator's to create; the chart never does.
    assert not [
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    off = render({"remediation": {"killSwitch": {"enabled": False}}})
    assert "kill_switch_file" not in rendered_config(off)["remediation"]
    assert "kill-switch" not in str(only(off, "Deployment"))


def test_config_or_secret_change_rolls_the_pods() -> None:
    """A change in the receiver config or the credentials changes the pod template."""

    def annotations(values: dict[str, Any]) -> dict[str, str]:
        deployment = only(render(values), "Deployment")
        found: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return found

    base = annotations({})
    assert base == annotations({})  # stable when nothing changes
    changed_config = annotations({"config": {"logging": {"level": "debug"}}})
    assert changed_config["checksum/config"] != base["checksum/config"]
    assert changed_config["checksum/secret"] == base["checksum/secret"]
    changed_secret = annotations({"secrets": {"webhookToken": "a-new-token-for-alertmanager"}})
    assert changed_secret["checksum/secret"] != base["checksum/secret"]


def test_maintenance_mode_is_a_config_change_that_keeps_the_pod_taking_webhooks() -> None:
    """``config.worker.paused`` reaches the receiver's config, rolls the pod, and changes
    nothing else: the same probes, so the paused pod is still ready and takes webhooks."""
    paused, default = rendered("maintenance"), rendered("default")
    assert rendered_config(paused)["worker"]["paused"] is True
    assert rendered_config(default).get("worker", {}).get("paused", False) is False

    def template(docs: list[dict[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = only(docs, "Deployment")["spec"]["template"]
        return found

    assert (
        template(paused)["metadata"]["annotations"]["checksum/config"]
        != (template(default)["metadata"]["annotations"]["checksum/config"])
    )
    for probe in ("readinessProbe", "livenessProbe"):
        assert receiver_container(paused)[probe] == receiver_container(default)[probe]
    others = [d for d in paused if d["kind"] not in ("Deployment", "ConfigMap", "Secret")]
    assert others == [d for d in default if d["kind"] not in ("Deployment", "ConfigMap", "Secret")]


# --- config and secrets -------------------------------------------------------------------


# What each mounted file would hold in a real Secret (the model checks their shape).
PLAUSIBLE_SECRETS = {
    "webhook-token": "token-alertmanager-sends-as-bearer",
    "pagerduty-routing-key": "0123456789abcdef0123456789abcdef",
    "statuspage-api-key": "statuspage-api-key-value",
    "slack-webhook-url": "https://hooks.slack.test/services/T000/B000/XXXX",
    "pagerduty-webhook-secret": "pagerduty-webhook-v3-signing-secret",
    "slack-signing-secret": "8f742231b10e8888abcd99yyyzzz85a5",
    "ui-link-key": "an-hmac-key-for-signed-links-of-48-characters!!",
    "dsn": "postgresql://receiver:db-password@posthog-receiver-db-rw.monitoring.svc:5432/app",
}


def check_config(path: Path) -> tuple[int, str, str]:
    """`posthog-receiver check-config --require-secrets --config PATH` in this process, as
    for a pod's start (every secret file must be readable): (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["check-config", "--require-secrets", "--config", str(path)])
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def _posthog_receiver() -> list[str]:
    script = Path(sys.executable).with_name("posthog-receiver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "receiver"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_passes_check_config(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`posthog-receiver check-config` accepts the rendered config.yaml with its secret files,
    and every receiver setting the pod sets through its environment is one the receiver has."""
    docs = rendered(scenario)
    config = rendered_config(docs)
    container = receiver_container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    refs = file_refs(config)
    assert refs, "the webhook token at least comes from a mounted file"
    text = only(docs, "ConfigMap")["data"]["config.yaml"]
    for where, ref in refs:
        ref_path = Path(ref)
        # Every file the config reads is provided by a Secret volume, under its mount.
        mount = mounts[str(ref_path.parent)]
        assert mount["readOnly"] is True, where
        secret = volumes[mount["name"]]["secret"]
        assert ref_path.name in {item["path"] for item in secret["items"]}, where
        local_dir = tmp_path / mount["name"]
        local_dir.mkdir(exist_ok=True)
        (local_dir / ref_path.name).write_text(PLAUSIBLE_SECRETS[ref_path.name] + "\n")
        text = text.replace(f"{ref_path.parent}/", f"{local_dir}/")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)

    # The pod's environment overrides, with what the downward API would give them.
    pod_env = {}
    for env in container.get("env", []):
        if env.get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}}:
            pod_env[env["name"]] = f"{RELEASE}-posthog-incident-receiver-5d8c7b9f4-x2k8q"
        else:
            pod_env[env["name"]] = env["value"]
    for name, value in pod_env.items():
        monkeypatch.setenv(name, value)
    code, out, err = check_config(config_file)
    assert code == 0, err
    assert "config OK" in out
    settings = load_settings(config_file)
    for name, value in pod_env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        node: Any = settings
        for part in name.removeprefix(ENV_PREFIX).lower().split("__"):
            node = getattr(node, part)  # a setting the receiver has, not a name it ignores
        assert str(node) == value, name
    if scenario == "default":
        # Once through the installed console script too, exactly as the pod runs it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_RECEIVER")}
        result = subprocess.run(
            [
                *_posthog_receiver(),
                "check-config",
                "--require-secrets",
                "--config",
                str(config_file),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "config OK" in result.stdout


def test_check_config_catches_a_config_the_model_does_not_know(tmp_path: Path) -> None:
    """A key the settings model lacks, passed through values, fails check-config."""
    docs = render({"config": {"server": {"no_such_setting": 1}}})
    text = only(docs, "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "webhook-token").write_text("token\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text.replace("/etc/posthog-receiver/secrets/", f"{tmp_path}/"))
    code, _, err = check_config(config_file)
    assert code != 0
    assert "server.no_such_setting" in err


def test_prometheus_url_is_the_one_prometheus_setting() -> None:
    """prometheusUrl becomes the receiver's top-level prometheus.url, read by both
    remediation's verify query and the evidence; the old keys are not rendered."""
    config = rendered_config(render({"prometheusUrl": "http://prometheus.monitoring:9090"}))
    assert config["prometheus"] == {"url": "http://prometheus.monitoring:9090"}
    assert "verify" not in config["remediation"]
    assert "prometheus" not in config["evidence"]


def test_values_config_is_merged_over_the_chart_settings() -> None:
    """Free-form config values are passed through and override the chart's defaults."""
    config = rendered_config(
        render({"config": {"logging": {"level": "debug", "format": "console"}}})
    )
    assert config["logging"] == {"level": "debug", "format": "console"}
    assert config["store"]["path"] == "/var/lib/posthog-receiver/receiver.sqlite3"
    assert config["webhook"]["bearer_token"] == {
        "file": "/etc/posthog-receiver/secrets/webhook-token"
    }


def test_created_secret_holds_the_enabled_credentials() -> None:
    """The chart's Secret holds the token and one key per enabled notification channel."""
    values = {
        "secrets": {
            "webhookToken": "token-alertmanager-sends",
            "pagerdutyRoutingKey": "R0UTINGKEY",
            "slackWebhookUrl": "https://hooks.slack.test/services/T/B/X",
        },
        "notify": {"pagerduty": {"enabled": True}, "slack": {"enabled": True}},
    }
    docs = render(values)
    secret = only(docs, "Secret")
    assert set(secret["data"]) == {"webhook-token", "pagerduty-routing-key", "slack-webhook-url"}
    assert secret["data"]["webhook-token"] == "dG9rZW4tYWxlcnRtYW5hZ2VyLXNlbmRz"
    items = next(
        v
        for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )["secret"]["items"]
    assert {i["key"] for i in items} == set(secret["data"])


def test_webhooks_slack_buttons_and_signed_links_mount_their_secrets() -> None:
    """PagerDuty webhooks, Slack's buttons and signed links each read a file of the chart's
    Secret; a link key left empty is generated, and an upgrade keeps the one in the cluster."""
    values = {
        "secrets": {
            "pagerdutyRoutingKey": "R0UTINGKEY",
            "slackWebhookUrl": "https://hooks.slack.test/services/T/B/X",
            "pagerdutyWebhookSecret": "pd-webhook-signing-secret",
            "slackSigningSecret": "slack-app-signing-secret",
        },
        "notify": {
            "pagerduty": {"enabled": True, "webhook": True},
            "slack": {"enabled": True, "interactive": True},
        },
        "ui": {"signedLinks": True},
    }
    docs = render(values)
    config = rendered_config(docs)
    secrets_dir = "/etc/posthog-receiver/secrets"
    assert config["notify"]["pagerduty"]["webhook"] == {
        "secrets": [{"file": f"{secrets_dir}/pagerduty-webhook-secret"}]
    }
    assert config["notify"]["slack"]["signing_secret"] == {
        "file": f"{secrets_dir}/slack-signing-secret"
    }
    assert config["ui"]["link_key"] == {"file": f"{secrets_dir}/ui-link-key"}
    data = only(docs, "Secret")["data"]
    assert base64.b64decode(data["pagerduty-webhook-secret"]) == b"pd-webhook-signing-secret"
    assert base64.b64decode(data["slack-signing-secret"]) == b"slack-app-signing-secret"
    generated = base64.b64decode(data["ui-link-key"])
    assert len(generated) == 48
    items = next(
        v
        for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )["secret"]["items"]
    assert {i["key"] for i in items} == set(data)
    # Off by default: nothing mounted, nothing in the config.
    plain = render({})
    assert "link_key" not in rendered_config(plain)["ui"]
    assert set(only(plain, "Secret")["data"]) == {"webhook-token"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"notify": {"pagerduty": {"enabled": True, "webhook": True}}}, "pagerdutyWebhookSecret"),
        (
            {
                "notify": {"pagerduty": {"webhook": True}},
                "secrets": {"pagerdutyWebhookSecret": "s"},
            },
            "needs notify.pagerduty.enabled",
        ),
        (
            {"notify": {"slack": {"interactive": True}}, "secrets": {"slackSigningSecret": "s"}},
            "needs notify.slack.enabled",
        ),
    ],
)
def test_webhook_or_buttons_without_what_they_need_fail_to_render(
    values: dict[str, Any], complaint: str
) -> None:
    """A PagerDuty webhook without its signing secret, or without PagerDuty; Slack buttons
    without Slack: refused at render time, naming what is missing."""
    values = deep_merge({"secrets": {"pagerdutyRoutingKey": "R0UTINGKEY"}}, values)
    with pytest.raises(helm.HelmRenderError, match=complaint):
        render(values)


def test_enabled_channel_without_its_credential_fails_to_render() -> None:
    """Enabling PagerDuty without a routing key is an error naming the missing value."""
    with pytest.raises(helm.HelmRenderError, match=r"secrets\.pagerdutyRoutingKey"):
        render({"notify": {"pagerduty": {"enabled": True}}})


def test_statuspage_without_its_page_fails_to_render() -> None:
    """Statuspage enabled without config.notify.statuspage.page_id is refused at render time."""
    values = {"notify": {"statuspage": {"enabled": True}}, "secrets": {"statuspageApiKey": "k"}}
    with pytest.raises(helm.HelmRenderError, match="page_id"):
        render(values)


def test_existing_secret_is_mounted_with_its_own_key_names() -> None:
    """With existingSecret no Secret is created; its keys map onto the files the config reads."""
    docs = rendered("existing-secret")
    assert not of_kind(docs, "Secret")
    volume = next(
        v
        for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )
    assert volume["secret"]["secretName"] == "posthog-receiver-credentials"
    assert {i["key"]: i["path"] for i in volume["secret"]["items"]} == {
        "alertmanager-token": "webhook-token",
        "pd-routing-key": "pagerduty-routing-key",
        "statuspage-key": "statuspage-api-key",
        "slack-url": "slack-webhook-url",
        "pd-webhook-secret": "pagerduty-webhook-secret",
        "slack-signing": "slack-signing-secret",
        "link-key": "ui-link-key",
    }


# --- traffic, monitoring, helm test -------------------------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert not selector.get("matchExpressions")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_network_policy_admits_alertmanager_prometheus_and_the_test_pod() -> None:
    """Ingress on the HTTP port only from Alertmanager, Prometheus and the helm test pod."""
    docs = rendered("monitoring")
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _matches(
        policy["spec"]["podSelector"],
        only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"],
    )
    peers = [rule["from"][0] for rule in policy["spec"]["ingress"]]
    for rule in policy["spec"]["ingress"]:
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    monitoring_ns = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert {
        "namespaceSelector": monitoring_ns,
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}},
    } in peers
    assert {
        "namespaceSelector": monitoring_ns,
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    } in peers
    test_pod = only(docs, "Pod")
    assert any(
        "namespaceSelector" not in p and _matches(p["podSelector"], test_pod["metadata"]["labels"])
        for p in peers
    )
    assert not of_kind(rendered("read-only"), "NetworkPolicy")


def test_helm_test_pod_checks_readiness_without_joining_the_service() -> None:
    """The helm test pod curls /readyz via the Service and is not selected by it or the PDB."""
    docs = rendered("default")
    pod = only(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = " ".join(pod["spec"]["containers"][0]["command"])
    service = only(docs, "Service")
    assert command.startswith("curl --fail")
    assert command.endswith(
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"
    )
    assert not _matches({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
    assert not _matches(
        only(docs, "PodDisruptionBudget")["spec"]["selector"], pod["metadata"]["labels"]
    )
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_monitor_scrapes_the_service_as_the_rules_expect() -> None:
    """The ServiceMonitor scrapes the Service's /metrics as job posthog-incident-receiver."""
    docs = rendered("monitoring")
    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert _matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "posthog-incident-receiver"
    assert 'job="posthog-incident-receiver"' in RULES_FILE.read_text()
    assert not of_kind(rendered("default"), "ServiceMonitor")


def test_prometheus_rule_carries_the_rules_file(tmp_path: Path) -> None:
    """The PrometheusRule holds the rules file's groups, and promtool accepts them as rendered."""
    docs = rendered("monitoring")
    rule = only(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    rendered_rules = tmp_path / "rules.yaml"
    rendered_rules.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(rendered_rules)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_groups_can_be_chosen() -> None:
    """prometheusRule.receiver=false leaves only the posthog_errors_total alerts."""
    docs = render({"prometheusRule": {"enabled": True, "receiver": False}})
    groups = only(docs, "PrometheusRule")["spec"]["groups"]
    assert [g["name"] for g in groups] == ["posthog-integration"]


def test_drill_alerts_come_with_the_drill() -> None:
    """The drill's alert group is in the PrometheusRule only when the drill runs."""
    without = render({"prometheusRule": {"enabled": True}})
    names = [g["name"] for g in only(without, "PrometheusRule")["spec"]["groups"]]
    assert names == ["posthog-integration", "posthog-incident-receiver"]
    with_drill = render({"prometheusRule": {"enabled": True}, "drill": {"enabled": True}})
    names = [g["name"] for g in only(with_drill, "PrometheusRule")["spec"]["groups"]]
    assert names == ["posthog-integration", "posthog-incident-receiver", "posthog-receiver-drill"]


def test_drill_cronjob_is_off_by_default() -> None:
    """No drill runs unless asked for: it pages PagerDuty and posts to Slack."""
    assert of_kind(rendered("default"), "CronJob") == []


def test_drill_cronjob_runs_the_drill_as_the_receiver_and_reports_to_it() -> None:
    """The drill uses the receiver's config, credentials and service account (so it checks
    the receiver's own permissions), reports to the receiver's Service, and the NetworkPolicy
    admits it there; one drill at a time, not retried."""
    docs = rendered("monitoring")
    cron = only(docs, "CronJob")
    deployment = only(docs, "Deployment")["spec"]["template"]["spec"]
    service = only(docs, "Service")
    assert cron["spec"]["schedule"] == "0 9 * * 1"
    assert cron["spec"]["timeZone"] == "Europe/Berlin"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == deployment["serviceAccountName"]
    (container,) = pod["containers"]
    (receiver,) = deployment["containers"]
    assert container["image"] == receiver["image"]
    port = service["spec"]["ports"][0]["port"]
    assert container["args"] == [
        "drill",
        "--config",
        receiver["args"][2],
        "--report-to",
        f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}",
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    receiver_volumes = {v["name"]: v for v in deployment["volumes"]}
    for name in ("config", "secrets"):
        assert volumes[name] == receiver_volumes[name]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for mount in receiver["volumeMounts"]:
        if mount["name"] in ("config", "secrets"):
            assert mounts[mount["name"]] == mount
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    labels = job["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert not selector.items() <= labels.items()  # never behind the receiver's Service
    policy = only(docs, "NetworkPolicy")
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" not in peer
    ]
    assert any(wanted.items() <= labels.items() for wanted in admitted)


def test_runbook_base_url_moves_every_alert_link() -> None:
    """prometheusRule.runbookBaseUrl replaces the base of every alert's runbook_url."""
    base = "https://wiki.example.com/posthog/alerts"
    docs = render({"prometheusRule": {"enabled": True, "runbookBaseUrl": base}})
    rules = [r for g in only(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"
