"""The Kubernetes manifests: render with Kustomize, validate against the schemas, check policy.

Built-in kinds are validated (strict: unknown fields rejected) with `kubernetes-validate`
against two Kubernetes versions. The KEDA kinds are CRDs, absent from those schemas: they are
validated against the vendored subset schemas in tests/deploy/schemas/. Any other kind fails.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from deploy_helpers import (
    DEPLOY,
    DOCKER,
    NAMESPACE,
    REPO,
    SCHEMAS,
    SECRET_NAME,
    TARGETS,
    by_kind,
    containers,
    pod_specs,
)

# The oldest Kubernetes minor still in common support at hospitals, and a recent one.
K8S_VERSIONS = ("1.30", "1.33")
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY", re.I)
COMPONENTS = ("api", "worker", "redis")


def component(d: dict[str, Any]) -> str | None:
    return d["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def workload(docs: list[dict[str, Any]], comp: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and component(d) == comp]
    names = [d["metadata"]["name"] for d in found]
    assert len(found) == 1, f"expected one {comp} workload, got {names}"
    return found[0]


def main_container(d: dict[str, Any]) -> dict[str, Any]:
    return d["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("target", TARGETS)
def test_renders_into_one_namespace(rendered, target):
    docs = rendered[target]
    assert docs, f"{target} rendered nothing"
    namespaces = by_kind(docs, "Namespace")
    assert list(namespaces) == [NAMESPACE]
    for d in docs:
        if d["kind"] != "Namespace":
            where = f"{d['kind']}/{d['metadata']['name']}"
            assert d["metadata"].get("namespace") == NAMESPACE, where


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_validates_against_kubernetes_schemas(rendered, target, version):
    problems = []
    for d in rendered[target]:
        where = f"{d['kind']}/{d['metadata']['name']}"
        crd = CRD_SCHEMAS.get((d["apiVersion"], d["kind"]))
        if crd:  # CRD: not in kubernetes-validate's schemas, see the module docstring
            schema = json.loads((SCHEMAS / crd).read_text())
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(d), key=str)
            problems += [f"{where}: {e.json_path}: {e.message}" for e in errors]
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: no schema ({e.message}); add one if it is a CRD")
    assert not problems, "\n".join(problems)


def test_crd_schemas_reject_typos():
    """The vendored KEDA schemas are strict enough to catch a misspelt field."""
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).read_text())
    good = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"name": "w"},
                     "triggers": [{"type": "redis-streams", "metadata": {"stream": "s"}}]}}
    jsonschema.validate(good, schema)
    bad = json.loads(json.dumps(good))
    bad["spec"]["maxReplicas"] = 3  # the HPA spelling, not KEDA's maxReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_namespace_enforces_restricted_pod_security(rendered):
    labels = by_kind(rendered["overlays/gpu"], "Namespace")[NAMESPACE]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("target", TARGETS)
def test_pods_meet_restricted_pod_security(rendered, target):
    problems = []
    for where, _meta, spec in pod_specs(rendered[target]):
        pod_sc = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where}: {flag}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile RuntimeDefault")
        for v in spec.get("volumes", []):
            if "hostPath" in v:
                problems.append(f"{where}: hostPath volume {v['name']}")
        for c in containers(spec):
            sc = c.get("securityContext", {})
            name = f"{where}/{c['name']}"
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{name}: runAsNonRoot")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
                problems.append(f"{name}: needs an explicit non-zero runAsUser")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation false")
            if sc.get("privileged"):
                problems.append(f"{name}: privileged")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"] or caps.get("add"):
                problems.append(f"{name}: capabilities drop [ALL], add nothing")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{name}: seccompProfile RuntimeDefault")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_probes_requests_limits_and_a_pinned_image(rendered, target):
    problems = []
    for where, _meta, spec in pod_specs(rendered[target]):
        for c in spec["containers"]:
            name = f"{where}/{c['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{name}: no {probe}")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problems.append(f"{name}: no {kind}.{r}")
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "@sha256:" not in image and (not tag or tag == "latest"):
                problems.append(f"{name}: image {image!r} not pinned")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS)
def test_no_inlined_secrets(rendered, rendered_text, target):
    docs = rendered[target]
    assert not by_kind(docs, "Secret"), "Secrets are created outside git, never rendered"
    problems = []
    for where, _meta, spec in pod_specs(docs):
        for c in containers(spec):
            for e in c.get("env", []):
                if SECRETISH.search(e["name"]) and "value" in e and not e["name"].endswith("_FILE"):
                    problems.append(f"{where}/{c['name']}: env {e['name']} has an inline value")
                value = str(e.get("value", ""))
                # URLs may carry credentials only as a $(VAR) reference to a secretKeyRef env.
                m = re.match(r"^[a-z]+://([^@/]*)@", value)
                if m and not re.fullmatch(r"[^:]*:?\$\([A-Z_]+\)", m.group(1)):
                    problems.append(f"{where}/{c['name']}: env {e['name']} embeds a credential")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] != SECRET_NAME:
                    problems.append(f"{where}: unexpected Secret {ref['name']}")
    for d in by_kind(docs, "TriggerAuthentication").values():
        for ref in d["spec"].get("secretTargetRef", []):
            assert ref["name"] == SECRET_NAME
    for d in by_kind(docs, "ScaledObject").values():
        for t in d["spec"]["triggers"]:
            assert not {"password", "username"} & set(t["metadata"]), \
                "credentials come through the authenticationRef"
    inlined = r"(?im)^\s*(stringData|data):\s*\n\s+[\w.-]*(password|secret|token)"
    assert not re.search(inlined, rendered_text[target])
    assert not problems, "\n".join(problems)


def test_secret_keys_are_documented(rendered):
    """Every key of eitmon-secrets the manifests read appears in docs/deployment.md."""
    keys = set()
    for _where, _meta, spec in pod_specs(rendered["overlays/gpu"]):
        for c in containers(spec):
            keys |= {e["valueFrom"]["secretKeyRef"]["key"] for e in c.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})}
        for v in spec.get("volumes", []):
            keys |= {i["key"] for i in v.get("secret", {}).get("items", [])}
    assert keys == {"redis-password", "jwt-secret"}
    doc = (REPO / "docs" / "deployment.md").read_text()
    assert f"create secret generic {SECRET_NAME}" in doc
    for key in keys:
        assert f"{key}=" in doc, f"docs/deployment.md does not say how to create key {key}"


def test_pod_disruption_budgets_cover_every_component(rendered):
    docs = rendered["overlays/gpu"]
    pdbs = by_kind(docs, "PodDisruptionBudget").values()
    for comp in COMPONENTS:
        labels = workload(docs, comp)["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs
                    if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{comp}: {len(matching)} PodDisruptionBudgets"


def test_gpu_only_in_the_gpu_overlay(rendered, rendered_text):
    res = main_container(workload(rendered["overlays/gpu"], "worker"))["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1"
    assert res["requests"]["nvidia.com/gpu"] == "1"
    for target in ("base", "overlays/cpu"):
        assert "nvidia.com/gpu" not in rendered_text[target], target
    assert main_container(workload(rendered["overlays/gpu"], "worker"))["image"].endswith("-gpu")
    assert main_container(workload(rendered["overlays/cpu"], "worker"))["image"].endswith("-cpu")
    for target in TARGETS:
        assert "-gpu" not in main_container(workload(rendered[target], "api"))["image"]


@pytest.mark.parametrize("target", TARGETS)
def test_worker_has_time_to_checkpoint_and_writable_volumes(rendered, target):
    worker = workload(rendered[target], "worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 60
    config = by_kind(rendered[target], "ConfigMap")["eitmon-config"]["data"]
    c = main_container(worker)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for var in ("EITMON_CACHE_DIR", "EITMON_CHECKPOINT_DIR"):
        assert config[var] in mounts, f"{var}={config[var]} is not a mounted volume"
    assert "persistentVolumeClaim" in volumes[mounts[config["EITMON_CHECKPOINT_DIR"]]], \
        "checkpoints must outlive the pod so that another worker can take the session over"
    assert "/tmp" in mounts
    assert any(e.get("configMapRef", {}).get("name") == "eitmon-config" for e in c["envFrom"])


@pytest.mark.parametrize("target", TARGETS)
def test_keda_scales_the_worker_on_the_control_stream(rendered, target):
    docs = rendered[target]
    (so,) = by_kind(docs, "ScaledObject").values()
    assert so["spec"]["scaleTargetRef"]["name"] == workload(docs, "worker")["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] >= 1
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis-streams"
    assert meta["stream"] == "eitmon:control"
    known = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
             "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup",
             "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
             "databaseIndex", "enableTLS", "unsafeSsl"}
    assert set(meta) <= known, set(meta) - known
    # Without consumerGroup KEDA uses XLEN; the target is the sessions one worker carries.
    assert "consumerGroup" not in meta
    config = by_kind(docs, "ConfigMap")["eitmon-config"]["data"]
    assert meta["streamLength"] == config["EITMON_SESSIONS_PER_WORKER"]
    redis_svc = [s for s in by_kind(docs, "Service").values()
                 if component(s) == "redis" and s["spec"].get("clusterIP") != "None"]
    redis_name = redis_svc[0]["metadata"]["name"]
    assert meta["address"] == f"{redis_name}.{NAMESPACE}.svc.cluster.local:6379"
    auth = by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password"}
    # The apps reach the same server under its in-namespace name.
    for comp in ("api", "worker"):
        env = {e["name"]: e for e in main_container(workload(docs, comp))["env"]}
        assert f"@{redis_svc[0]['metadata']['name']}:6379/" in env["REDIS_URL"]["value"]


def test_api_service_hpa_ingress_fit_together(rendered):
    docs = rendered["overlays/gpu"]
    api = workload(docs, "api")
    assert "replicas" not in api["spec"], "the HPA owns the replica count"
    labels = api["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in main_container(api)["ports"]}
    svc = by_kind(docs, "Service")["eitmon-api"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": api["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2
    (ing,) = by_kind(docs, "Ingress").values()
    tls_hosts = {h for t in ing["spec"]["tls"] for h in t["hosts"]}
    assert all(t.get("secretName") for t in ing["spec"]["tls"])
    for rule in ing["spec"]["rules"]:
        assert rule["host"] in tls_hosts, "every Ingress host is served over TLS"
        for p in rule["http"]["paths"]:
            assert p["backend"]["service"]["name"] == "eitmon-api"
    probes = main_container(api)
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in main_container(api)["env"]}
    mounts = [m["mountPath"] for m in main_container(api)["volumeMounts"]]
    assert any(env["EITMON_JWT_SECRET_FILE"]["value"].startswith(m + "/") for m in mounts)
    assert "EITMON_JWT_SECRET" not in env, "the service refuses both the file and the value"


def test_worker_gets_no_jwt_secret(rendered):
    worker = workload(rendered["overlays/gpu"], "worker")
    text = json.dumps(worker)
    assert "jwt" not in text.lower(), "least privilege: the worker never checks tokens"


def test_redis_is_persistent_with_aof_and_auth(rendered):
    docs = rendered["overlays/gpu"]
    redis = workload(docs, "redis")
    assert redis["kind"] == "StatefulSet"
    assert redis["spec"]["volumeClaimTemplates"], "Valkey data must be on a PVC"
    c = main_container(redis)
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/data", "/etc/valkey", "/tmp"}
    script = " ".join(c["command"] + c["args"])
    assert "requirepass" in script and "$REDIS_PASSWORD" in script
    assert "--requirepass" not in script, "the password never goes on a command line"
    conf_maps = [cm for name, cm in by_kind(docs, "ConfigMap").items()
                 if name.startswith("eitmon-valkey-config")]
    (conf,) = conf_maps
    text = conf["data"]["valkey.conf"]
    assert re.search(r"(?m)^appendonly yes$", text)
    assert re.search(r"(?m)^include /tmp/valkey-auth.conf$", text)
    assert (DEPLOY / "base" / "valkey.conf").read_text() == (DOCKER / "valkey.conf").read_text(), \
        "deploy/base/valkey.conf and docker/valkey.conf must stay identical"


def _peers(rule_peers: list[dict[str, Any]]) -> set[str]:
    out = set()
    for p in rule_peers:
        if "podSelector" in p and "namespaceSelector" not in p:
            out.add(p["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "?"))
        elif "namespaceSelector" in p:
            out.add("ns:" + p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
        else:
            out.add("?" + json.dumps(p))
    return out


def test_network_policies_default_deny_then_allow_only_the_paths_used(rendered):
    docs = rendered["overlays/gpu"]
    policies = list(by_kind(docs, "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny-all policy"
    ingress: set[tuple[str, str, int]] = set()
    egress: set[tuple[str, str, int]] = set()
    for p in policies:
        labels = p["spec"]["podSelector"].get("matchLabels", {})
        sel = labels.get("app.kubernetes.io/component", "*")
        for rule in p["spec"].get("ingress", []):
            for src in _peers(rule["from"]):
                for port in rule["ports"]:
                    ingress.add((src, sel, port["port"]))
        for rule in p["spec"].get("egress", []):
            for dst in _peers(rule["to"]):
                for port in rule["ports"]:
                    egress.add((sel, dst, port["port"]))
    assert ingress == {("ns:ingress-nginx", "api", 8000), ("ns:monitoring", "api", 8000),
                       ("api", "redis", 6379), ("worker", "redis", 6379),
                       ("ns:keda", "redis", 6379)}
    assert egress == {("*", "ns:kube-system", 53), ("api", "redis", 6379),
                      ("worker", "redis", 6379)}
