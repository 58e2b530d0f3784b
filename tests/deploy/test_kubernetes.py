"""deploy/kubernetes/ and deploy/container/, offline (no cluster): Kubernetes' own schemas, the
Prometheus Operator's PodMonitor schema, and each invariant docs/kubernetes.md promises, each shown
to catch a broken copy of the manifests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .manifests import CHECKS, CONTAINERFILE, KUSTOMIZE_DIR, ROOT, Deploy, kustomization, mutated, pod_spec, render

#: The oldest Kubernetes this deployment is for (hostUsers and every field used exist there) and the newest known.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_KINDS = {"PodMonitor"}


@pytest.fixture
def deploy(tmp_path: Path) -> Deploy:
    return Deploy(render(), tmp_path)


def test_every_manifest_is_a_resource_of_the_kustomization():
    files = {p.name for p in KUSTOMIZE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == files


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_are_valid_against_kubernetes_schemas(version: str):
    """Strict schemas: an unknown field (a typo, a field of a newer release) is an error, as with kubectl's
    server-side field validation."""
    objects = [o for o in render() if o["kind"] not in CRD_KINDS]
    assert {o["kind"] for o in objects} == {"Namespace", "ConfigMap", "DaemonSet"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_schema_validation_catches_a_typo_and_a_wrong_type(version: str):
    typo = mutated(render(), lambda objs: pod_spec(_kind(objs, "DaemonSet")).update(hostUser=True))
    with pytest.raises(kubernetes_validate.ValidationError, match="hostUser"):
        kubernetes_validate.validate(_kind(typo, "DaemonSet"), version, strict=True)
    wrong = mutated(render(), lambda objs: pod_spec(_kind(objs, "DaemonSet"))["containers"][0]["ports"][0]
                    .update(containerPort="10964"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_kind(wrong, "DaemonSet"), version, strict=True)


#: The fields of a PodMonitor this deployment uses, as the Prometheus Operator's CRD (monitoring.coreos.com/v1)
#: defines them: names, types, the duration pattern and the relabel actions. A structural check, closed
#: (an unknown field is an error, as with the API server's strict field validation): no PyPI package
#: ships the CRD but cloudcoil's models, whose pytest plugin would load in every pytest run here. The
#: manifest was also checked once against cloudcoil.models.prometheus_operator 0.80.1.0's full schema
#: (operator v0.80.1): no error.
DURATION = {"type": "string",
            "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
ACTIONS = ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
           "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase", "Uppercase",
           "keepequal", "KeepEqual", "dropequal", "DropEqual"]
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


PODMONITOR_SCHEMA = closed({
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "PodMonitor"},
    "metadata": closed({"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": STRINGS}, ("name",)),
    "spec": closed({
        "selector": closed({"matchLabels": STRINGS}),
        "namespaceSelector": closed({"any": {"type": "boolean"},
                                     "matchNames": {"type": "array", "items": {"type": "string"}}}),
        "jobLabel": {"type": "string"},
        "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": closed({
            "port": {"type": "string"},
            "path": {"type": "string"},
            "interval": DURATION,
            "scrapeTimeout": DURATION,
            "relabelings": {"type": "array", "items": closed({
                "action": {"enum": ACTIONS},
                "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
                "targetLabel": {"type": "string"},
                "replacement": {"type": "string"},
                "regex": {"type": "string"},
                "separator": {"type": "string"},
            })},
        })},
    }, ("selector",)),
}, ("apiVersion", "kind", "metadata", "spec"))


def podmonitor_errors(objects: list[dict[str, Any]]) -> list[str]:
    validator = jsonschema.Draft202012Validator(PODMONITOR_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(_kind(objects, "PodMonitor"))]


def test_podmonitor_has_the_fields_of_the_prometheus_operators_crd():
    assert podmonitor_errors(render()) == []


@pytest.mark.parametrize("change", [
    lambda spec: spec.update(podMetricsEndpoint=spec.pop("podMetricsEndpoints")),  # a typo
    lambda spec: spec["podMetricsEndpoints"][0].update(interval="30 seconds"),  # not a Prometheus duration
    lambda spec: spec["podMetricsEndpoints"][0]["relabelings"][0].update(action="rename"),  # no such action
], ids=["typo", "duration", "action"])
def test_the_podmonitor_schema_catches_a_broken_monitor(change):
    assert podmonitor_errors(mutated(render(), lambda objs: change(_kind(objs, "PodMonitor")["spec"])))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_renders_the_objects_these_tests_check():
    out = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZE_DIR)],
                         capture_output=True, text=True, check=True).stdout
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(out), key=key) == sorted(render(), key=key)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_manifests_keep_the_invariant(deploy: Deploy, name: str):
    assert CHECKS[name](deploy) == []


def _kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def _pod(objs):
    return pod_spec(_kind(objs, "DaemonSet"))


def _container(objs):
    return _pod(objs)["containers"][0]


def _config(objs, old: str, new: str) -> None:
    cm = _kind(objs, "ConfigMap")["data"]
    assert old in cm["hotplugd.toml"]
    cm["hotplugd.toml"] = cm["hotplugd.toml"].replace(old, new)


def _mount(objs, name: str) -> dict[str, Any]:
    return next(m for m in _container(objs)["volumeMounts"] if m["name"] == name)


def _volume(objs, name: str) -> dict[str, Any]:
    return next(v for v in _pod(objs)["volumes"] if v["name"] == name)


#: (the check that must catch it, what is broken, how): each invariant shown to fail when broken.
BROKEN = [
    ("privileged", "unprivileged", lambda o: _container(o)["securityContext"].update(privileged=False)),
    ("host_sysfs", "the container's own /sys", lambda o: _config(o, 'root = "/host/sys"', 'root = "/sys"')),
    ("host_sysfs", "/sys read-only", lambda o: _mount(o, "sys").update(readOnly=True)),
    ("host_sysfs", "no hostPath /sys", lambda o: _volume(o, "sys").update(hostPath={"path": "/srv/sys"})),
    ("state_directory", "state in the container", lambda o: _config(o, '"/var/lib/hotplugd"', '"/run/hotplugd"')),
    ("state_directory", "state on an emptyDir", lambda o: _volume(o, "state").pop("hostPath")
     or _volume(o, "state").update(emptyDir={})),
    ("node_namespaces", "hostPID", lambda o: _pod(o).update(hostPID=True)),
    ("node_namespaces", "hostNetwork", lambda o: _pod(o).update(hostNetwork=True)),
    ("node_namespaces", "a user namespace", lambda o: _pod(o).update(hostUsers=False)),
    ("guaranteed_qos", "Burstable", lambda o: _container(o)["resources"]["limits"].update(memory="512Mi")),
    ("guaranteed_qos", "no CPU limit", lambda o: _container(o)["resources"]["limits"].pop("cpu")),
    ("priority_and_tolerations", "no priority", lambda o: _pod(o).pop("priorityClassName")),
    ("priority_and_tolerations", "NoSchedule only", lambda o: _pod(o)["tolerations"][0].update(effect="NoSchedule")),
    ("liveness_on_metrics", "probe path", lambda o: _container(o)["livenessProbe"]["httpGet"].update(path="/healthz")),
    ("liveness_on_metrics", "port number", lambda o: _container(o)["ports"][0].update(containerPort=9100)),
    ("liveness_on_metrics", "config port", lambda o: _config(o, "port = 10964", "port = 10965")),
    ("metrics_on_pod_ip", "loopback", lambda o: _container(o)["args"].__setitem__(-1, 'metrics.address="127.0.0.1"')),
    ("metrics_on_pod_ip", "node IP", lambda o: _container(o)["env"][0]["valueFrom"]["fieldRef"]
     .update(fieldPath="status.hostIP")),
    ("config_valid", "unknown key", lambda o: _config(o, "root =", "rot =")),
    ("config_valid", "simulated onliner", lambda o: _config(o, 'backend = "sysfs"', 'backend = "nope"')),
    ("config_read_only_root_owned", "group-writable", lambda o: _volume(o, "config")["configMap"]
     .update(defaultMode=0o664)),
    ("no_dax_rules", "a dax rule", lambda o: _config(o, "[plugins.sysfs]\n",
                                                      '[plugins.sysfs]\ndax = [{device = "dax0.0"}]\n')),
    ("podmonitor_scrapes_the_pods", "port name", lambda o: _kind(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
     .update(port="http")),
    ("podmonitor_scrapes_the_pods", "selector", lambda o: _kind(o, "PodMonitor")["spec"]["selector"]["matchLabels"]
     .update({"app": "other"})),
    ("podmonitor_scrapes_the_pods", "node label", lambda o: _kind(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
     ["relabelings"][1].update(targetLabel="node")),
    ("podmonitor_scrapes_the_pods", "job", lambda o: _kind(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
     ["relabelings"].pop(0)),
    ("namespace_admits_privileged", "baseline", lambda o: _kind(o, "Namespace")["metadata"]["labels"]
     .update({"pod-security.kubernetes.io/enforce": "baseline"})),
]


@pytest.mark.parametrize("name,change", [(n, c) for n, _, c in BROKEN], ids=[f"{n}-{w}" for n, w, _ in BROKEN])
def test_a_broken_manifest_is_caught(tmp_path: Path, name: str, change):
    assert CHECKS[name](Deploy(mutated(render(), change), tmp_path))


def test_every_invariant_is_shown_to_catch_a_broken_manifest():
    assert {name for name, _, _ in BROKEN} == set(CHECKS)


def test_the_image_is_the_projects_version():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert _container(render())["image"] == f"hotplugd:{version}"


# -- the container image ----------------------------------------------------------------------

def containerfile_installs() -> set[str]:
    """Names of the .deb files the Containerfile's last stage installs (``NAME_*.deb``)."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    return {m for line in final.splitlines() if "apt-get install" in line
            for m in re.findall(r"/([a-z0-9][a-z0-9+.-]*)_\*\.deb", line)}


def test_the_image_is_debian_13_with_the_packages_built_from_this_repository():
    text = CONTAINERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["debian:trixie-slim", "debian:trixie-slim"]
    assert "dpkg-buildpackage -us -uc -b" in text
    assert "apt-get build-dep" in text  # the build dependencies are debian/control's
    assert containerfile_installs() == {"python3-hotplugd", "hotplugd"}
    assert _container(render())["command"] == ["/usr/bin/hotplugd"]


def control_packages() -> set[str]:
    return set(re.findall(r"^Package:\s*(\S+)", (ROOT / "debian" / "control").read_text(), re.M))


@pytest.mark.skipif(not (ROOT / "debian" / "control").exists(),
                    reason="debian/control has not landed (issue 24, item 1)")
def test_the_image_installs_packages_debian_control_defines():
    """The daemon's and the library's packages, by the names debian/control gives them."""
    installs = containerfile_installs()
    assert installs <= control_packages()
    assert {"hotplugd", "python3-hotplugd"} <= installs
