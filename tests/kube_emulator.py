"""kmock's KubernetesEmulator with the parts of a real API server these tests depend on.

kmock keeps objects and serves real HTTP, but (see its docs) it does not manage
``resourceVersion``, ignores ``dryRun`` and label selectors, and has no controllers. This
subclass adds, as a real API server would:
- ``metadata.resourceVersion`` bumped on every write; a merge patch carrying a stale one is
  refused with 409 Conflict (optimistic concurrency);
- ``dryRun=All``: the answer shows the patched object, nothing is stored;
- ``labelSelector`` (equality terms) on lists;
- ``metadata.generation`` bumped when a Deployment's spec changes, and a tiny Deployment
  controller that finishes the rollout at once (or never, with ``rollouts_finish = False``);
- faults on demand: the next matching requests answer an error status or hang;
- RBAC, when ``role`` is set: every request is checked against the Role's rules and refused
  with 403 as the API server words it, and ``SelfSubjectAccessReview`` answers from the same
  rules (without a Role every request is allowed, as for a cluster admin).
Writes go around kmock's own write path so that a refused or faulted request stores nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import yaml
from kmock import KubernetesEmulator, KubernetesError, Request, action, resource
from kmock._internal.dicts import patch_dict

DEPLOYMENTS = resource("apps", "v1", "deployments")
SECRETS = resource("", "v1", "secrets")
PODS = resource("", "v1", "pods")
EVENTS = resource("", "v1", "events")


@dataclass
class Fault:
    """Answer the next ``times`` requests matching method and plural with ``status``
    (after ``delay`` seconds); ``status=None`` with a delay only hangs, then serves.
    ``meanwhile`` runs when the fault is served: what another writer did that made the API
    server refuse the request (e.g. a 409 because it changed the object first)."""

    method: str
    plural: str
    status: int | None = 500
    times: int = 1
    delay: float = 0.0
    dry_run: bool | None = None  # None: either; True/False: only (non-)dry-run requests
    served: int = 0
    meanwhile: Callable[[], None] | None = None


@dataclass(frozen=True)
class Rule:
    """One rule of a Role: ``resources`` may name a subresource (``pods/log``)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def allows(self, verb: str, group: str, resource: str, name: str | None) -> bool:
        return (
            group in self.api_groups
            and resource in self.resources
            and verb in self.verbs
            and (not self.resource_names or name in self.resource_names)
        )


SERVICE_ACCOUNT = "system:serviceaccount:monitoring:posthog-receiver"
VERBS = {
    action.FETCH: "get",
    action.LIST: "list",
    action.WATCH: "watch",
    action.CREATE: "create",
    action.UPDATE: "patch",
    action.DELETE: "delete",
}


def runbook_role(*, without: tuple[str, str] | None = None) -> list[Rule]:
    """The Role of docs/rbac.md for the default target (and the evidence's reads), less one
    ``(verb, resource)`` if ``without`` says so."""
    rules = [
        Rule(("apps",), ("deployments",), ("get", "patch"), ("posthog-integration",)),
        Rule(("",), ("pods",), ("list",)),
        Rule(("",), ("pods/log",), ("get",)),
        Rule(("",), ("secrets",), ("get",), ("posthog-secrets",)),
        Rule(("",), ("events",), ("create", "list")),
    ]
    if without is None:
        return rules
    verb, resource = without
    return [
        Rule(r.api_groups, r.resources, tuple(v for v in r.verbs if v != verb), r.resource_names)
        if resource in r.resources
        else r
        for r in rules
    ]


@attrs.define(kw_only=True)
class ClusterEmulator(KubernetesEmulator):
    rollouts_finish: bool = True
    faults: list[Fault] = attrs.field(factory=list)
    role: list[Rule] | None = None
    _version: int = attrs.field(default=100, init=False)

    # -- setup helpers ----------------------------------------------------------------------

    def put_object(self, res: Any, namespace: str, name: str, body: dict[str, Any]) -> None:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("name", name)
        meta.setdefault("namespace", namespace)
        meta.setdefault("uid", f"uid-{namespace}-{name}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = self._next_version()
        if res == DEPLOYMENTS:
            meta.setdefault("generation", 1)
            self._settle_rollout(obj)
        self.objects[res, namespace, name] = obj

    def current(self, res: Any, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[res, namespace, name].raw)

    def fail(self, method: str, plural: str, status: int | None = 500, **kw: Any) -> Fault:
        fault = Fault(method.upper(), plural, status, **kw)
        self.faults.append(fault)
        return fault

    def writes(self, plural: str) -> list[Request]:
        """Stored (not dry-run) writes to ``plural``."""
        return [
            r
            for r in self
            if r.method.value in ("PATCH", "POST", "PUT")
            and r.resource is not None
            and r.resource.plural == plural
            and "dryRun" not in r.params
        ]

    # -- the API server -----------------------------------------------------------------------

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _settle_rollout(self, obj: dict[str, Any]) -> None:
        if not self.rollouts_finish:
            return
        replicas = obj.get("spec", {}).get("replicas", 1)
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }

    def _fault_for(self, request: Request) -> Fault | None:
        if request.resource is None:
            return None
        dry = "dryRun" in request.params
        for fault in self.faults:
            if (
                fault.served < fault.times
                and fault.method == request.method.value
                and fault.plural == request.resource.plural
                and (fault.dry_run is None or fault.dry_run == dry)
            ):
                fault.served += 1
                return fault
        return None

    def allowed(self, verb: str, group: str, resource: str, name: str | None) -> bool:
        if self.role is None:
            return True
        return any(rule.allows(verb, group, resource, name) for rule in self.role)

    def _access_review(self, request: Request) -> aiohttp.web.StreamResponse:
        review = request.data
        attributes = (review.get("spec") or {}).get("resourceAttributes") if review else None
        if not isinstance(attributes, dict) or not attributes.get("verb"):
            raise KubernetesError(
                status=400, reason="BadRequest", message="resourceAttributes.verb is required"
            )
        resource = attributes.get("resource", "")
        if attributes.get("subresource"):
            resource = f"{resource}/{attributes['subresource']}"
        allowed = self.allowed(
            attributes["verb"], attributes.get("group", ""), resource, attributes.get("name")
        )
        status: dict[str, Any] = {"allowed": allowed}
        if not allowed:
            status["reason"] = "no RBAC rule allows it"
        return aiohttp.web.json_response({**review, "status": status}, status=201)

    def _authorize(self, request: Request) -> None:
        resource = request.resource
        if resource is None or request.action not in VERBS:
            return
        plural = resource.plural
        if request.subresource:
            plural = f"{plural}/{request.subresource}"
        verb = VERBS[request.action]
        if not self.allowed(verb, resource.group or "", plural, request.name):
            kind = f"{plural}.{resource.group}" if resource.group else plural
            group = f'API group "{resource.group or ""}"'
            raise KubernetesError(
                status=403,
                reason="Forbidden",
                message=(
                    f'{kind} "{request.name or ""}" is forbidden: User "{SERVICE_ACCOUNT}" '
                    f'cannot {verb} resource "{plural}" in {group} in the namespace '
                    f'"{request.namespace}"'
                ),
            )

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural == "selfsubjectaccessreviews":
            return self._access_review(request)
        self._authorize(request)
        fault = self._fault_for(request)
        if fault is not None:
            if fault.meanwhile is not None:
                fault.meanwhile()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                raise KubernetesError(
                    status=fault.status, reason="Injected", message=f"injected {fault.status}"
                )
        if request.resource is not None and request.action == action.UPDATE:
            return self._patch(request)
        if request.resource is not None and request.action == action.CREATE:
            if "dryRun" in request.params:
                return aiohttp.web.json_response(request.data)
            request.data.setdefault("metadata", {})["resourceVersion"] = self._next_version()
        if request.resource is not None and request.action == action.LIST:
            selector = request.params.get("labelSelector")
            if selector:
                return self._list(request, selector)
        return await super()._handle(request)

    def _list(self, request: Request, selector: str) -> aiohttp.web.StreamResponse:
        wanted = dict(term.split("=", 1) for term in selector.split(","))
        items = []
        for (res, namespace, _), obj in self.objects.items():
            if res != request.resource or obj.deleted or namespace != request.namespace:
                continue
            labels = obj.raw.get("metadata", {}).get("labels", {})
            if all(labels.get(k) == v for k, v in wanted.items()):
                items.append(obj.raw)
        return aiohttp.web.json_response(
            {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}
        )

    def _patch(self, request: Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise KubernetesError(status=404, reason="NotFound", message="not found")
        current = copy.deepcopy(self.objects[key].raw)
        patch = request.data
        if isinstance(patch, dict):
            expected = patch.get("metadata", {}).get("resourceVersion")
            if expected is not None and expected != current["metadata"]["resourceVersion"]:
                raise KubernetesError(
                    status=409, reason="Conflict", message="the object has been modified"
                )
        try:
            new = copy.deepcopy(dict(patch_dict(current, patch)))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise KubernetesError(status=422, reason="Invalid", message=str(e)) from e
        new["metadata"]["resourceVersion"] = self._next_version()
        if request.resource == DEPLOYMENTS and new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            self._settle_rollout(new)
        if "dryRun" not in request.params:
            self.objects[key].history.append(new)
        return aiohttp.web.json_response(new)


def write_kubeconfig(path: Path, server_url: str, *, namespace: str = "default") -> Path:
    """A kubeconfig pointing at the emulator, with a bearer token like a real one has."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server_url}}],
                "users": [{"name": "receiver", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {
                            "cluster": "emulator",
                            "user": "receiver",
                            "namespace": namespace,
                        },
                    }
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


def deployment(
    name: str = "posthog-integration",
    *,
    env: list[dict[str, Any]] | None = None,
    replicas: int = 2,
    paused: bool = False,
) -> dict[str, Any]:
    """A Deployment manifest with the integration container and a sidecar."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "paused": paused,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "log-shipper",
                            "image": "shipper:1",
                            "env": [{"name": "A", "value": "1"}],
                        },
                        {
                            "name": "posthog-integration",
                            "image": "integration:1",
                            "env": env
                            if env is not None
                            else [{"name": "LOG_LEVEL", "value": "info"}],
                        },
                    ]
                },
            },
        },
    }


def pod(
    name: str, *, started: str, app: str = "posthog-integration", ready: bool = True
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "posthog-integration", "image": "integration:1"}]},
        "status": {
            "phase": "Running",
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "posthog-integration",
                    "ready": ready,
                    "restartCount": 0,
                    "image": "integration:1",
                    "imageID": "x",
                    "state": {"running": {"startedAt": started}},
                }
            ],
        },
    }


def secret(name: str, data: dict[str, str], *, managed_at: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if managed_at is not None:
        meta["managedFields"] = [
            {"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": managed_at}
        ]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}


def events_in(emulator: ClusterEmulator, namespace: str) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (res, ns, _), obj in emulator.objects.items()
        if res == EVENTS and ns == namespace and not obj.deleted
    ]


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
