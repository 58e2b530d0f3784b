"""deploy/kubernetes/ read as kustomize renders it, and each invariant docs/kubernetes.md promises as a check.

A check takes a :class:`Deploy` and returns its problems (empty: kept). test_kubernetes.py runs
every check on the shipped manifests and, for each, a broken copy that the check must catch.
The ConfigMap's config is read by hotplugd's own CLI (``check-config``, in-process) with the
container's args, ``$(POD_IP)`` expanded as the kubelet does: the config the pod would run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hotplugd.commands import cli
from hotplugd.config import Config
from hotplugd_sysfs.settings import parse as sysfs_settings

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
RULES = ROOT / "config" / "prometheus" / "hotplugd.rules.yml"
CONTAINER = "hotplugd"
#: Pod IPs the config is checked with (never contacted: check-config binds nothing).
POD_IPS = ("10.244.3.7", "fd00:10:244::7")
#: What hotplugd's metrics do not use as a label, so a target label of that name clashes with none.
TARGET_LABELS = {"job", "instance"}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())


def render(directory: Path = KUSTOMIZE_DIR) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` makes of this kustomization: its resources, its namespace
    on every namespaced object, its image tags (the only transformers it uses)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = [doc for name in kust["resources"] for doc in yaml.safe_load_all((directory / name).read_text()) if doc]
    images = {image["name"]: image for image in kust.get("images", [])}
    for obj in objects:
        if obj["kind"] != "Namespace" and "namespace" in kust:
            obj["metadata"]["namespace"] = kust["namespace"]
        for container in pod_spec(obj).get("containers", []) + pod_spec(obj).get("initContainers", []):
            image = images.get(container["image"].split(":")[0])
            if image:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec", {}).get("template", {}).get("spec", {}) if obj["kind"] == "DaemonSet" else {}


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion of command and args (``$$`` escapes, unknown names stay)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


@dataclass
class Deploy:
    objects: list[dict[str, Any]]
    workdir: Path  # where the ConfigMap's files are written, as the kubelet would mount them
    _configs: dict[str, Config] = field(default_factory=dict, repr=False)

    def one(self, kind: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        return pod_spec(self.one("DaemonSet"))

    @property
    def container(self) -> dict[str, Any]:
        return next(c for c in self.pod["containers"] if c["name"] == CONTAINER)

    def volume(self, mount: dict[str, Any]) -> dict[str, Any]:
        return next(v for v in self.pod.get("volumes", []) if v["name"] == mount["name"])

    def mounts(self, source: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(volumeMount, volume) of the container whose volume is a ``source`` (hostPath, configMap...)."""
        pairs = [(m, self.volume(m)) for m in self.container.get("volumeMounts", [])]
        return [(m, v) for m, v in pairs if source in v]

    def argv(self, pod_ip: str) -> list[str]:
        """``hotplugd check-config`` with the container's args, the ConfigMap mounted under workdir."""
        env = {e["name"]: pod_ip for e in self.container.get("env", [])
               if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"}
        args = [expand(a, env) for a in self.container["args"]]
        assert args[0] == "run", f"the container runs {args[0]!r}, not the daemon"
        for mount, volume in self.mounts("configMap"):
            local = self.workdir / volume["configMap"]["name"]
            if not local.exists():
                cm = next(o for o in self.objects if o["kind"] == "ConfigMap"
                          and o["metadata"]["name"] == volume["configMap"]["name"])
                local.mkdir(parents=True)
                for key, text in cm["data"].items():
                    (local / key).write_text(text)
                    os.chmod(local / key, volume["configMap"].get("defaultMode", 0o644))
            args = [str(local) + a[len(mount["mountPath"]):] if a.startswith(mount["mountPath"] + "/") else a
                    for a in args]
        return ["check-config", *args[1:]]

    def check_config(self, pod_ip: str) -> tuple[int, str]:
        """hotplugd's own ``check-config``: exit code and what it printed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(self.argv(pod_ip))
        return code, out.getvalue()

    def config(self, pod_ip: str = POD_IPS[0]) -> Config:
        if pod_ip not in self._configs:
            self._configs[pod_ip] = cli.config_from_args(cli.build_parser().parse_args(self.argv(pod_ip)))
        return self._configs[pod_ip]


Check = Callable[[Deploy], list[str]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


@check
def privileged(d: Deploy) -> list[str]:
    ok = d.container.get("securityContext", {}).get("privileged") is True
    return [] if ok else ["the container is not privileged: AppArmor/SELinux deny writes under /sys"]


@check
def host_sysfs(d: Deploy) -> list[str]:
    root = sysfs_settings(d.config().plugins.get("sysfs", {})).root
    mounts = [m for m, v in d.mounts("hostPath") if v["hostPath"]["path"].rstrip("/") == "/sys"]
    if not mounts:
        return ["no hostPath volume of /sys is mounted"]
    if root not in [m["mountPath"] for m in mounts]:
        return [f"plugins.sysfs.root is {root!r}, not where the host's /sys is mounted"]
    if any(m.get("readOnly") for m in mounts if m["mountPath"] == root):
        return ["the host's /sys is mounted read-only: no block can be onlined"]
    return []


@check
def state_directory(d: Deploy) -> list[str]:
    state = d.config().state_directory
    mounts = [(m, v) for m, v in d.mounts("hostPath") if m["mountPath"] == state]
    if not mounts:
        return [f"state_directory {state!r} is not a hostPath mount: the knobs' record dies with the pod"]
    mount, volume = mounts[0]
    problems = [] if volume["hostPath"]["path"] == "/var/lib/hotplugd" else [
        "the record is not under /var/lib/hotplugd"]
    return problems + (["the state directory is mounted read-only"] if mount.get("readOnly") else [])


@check
def node_namespaces(d: Deploy) -> list[str]:
    problems = [f"{key}: true shares the node's namespace" for key in ("hostPID", "hostNetwork", "hostIPC")
                if d.pod.get(key) is True]
    if d.pod.get("hostUsers") is False:
        problems.append("hostUsers: false puts the pod in a user namespace, which kernel uevents never reach")
    return problems


@check
def guaranteed_qos(d: Deploy) -> list[str]:
    problems = []
    for c in d.pod["containers"] + d.pod.get("initContainers", []):
        res = c.get("resources", {})
        for kind in ("cpu", "memory"):
            req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
            if req is None or lim is None or str(req) != str(lim):
                problems.append(f"{c['name']}: {kind} request {req} and limit {lim} differ: not Guaranteed QoS")
    return problems


@check
def priority_and_tolerations(d: Deploy) -> list[str]:
    problems = []
    if d.pod.get("priorityClassName") != "system-node-critical":
        problems.append(f"priorityClassName is {d.pod.get('priorityClassName')!r}, not system-node-critical")
    everything = [t for t in d.pod.get("tolerations", []) if t.get("operator") == "Exists" and not t.get("key")
                  and not t.get("effect")]
    return problems + ([] if everything else ["no toleration of every taint: some nodes get no hotplugd"])


@check
def liveness_on_metrics(d: Deploy) -> list[str]:
    ports = {p.get("name"): p["containerPort"] for p in d.container.get("ports", [])}
    problems = []
    if ports.get("metrics") != d.config().metrics.port:
        problems.append(f"the port named metrics is {ports.get('metrics')}, "
                        f"hotplugd serves on {d.config().metrics.port}")
    for probe in ("livenessProbe", "startupProbe"):
        get = d.container.get(probe, {}).get("httpGet")
        if get is None and probe == "startupProbe":
            continue
        if get is None or get.get("path") != "/metrics" or get.get("port") != "metrics":
            problems.append(f"{probe} is not an HTTP GET of /metrics on the port named metrics: {get}")
    return problems


@check
def metrics_on_pod_ip(d: Deploy) -> list[str]:
    return [f"metrics.address is {d.config(ip).metrics.address!r} where the pod's IP is {ip}"
            for ip in POD_IPS if d.config(ip).metrics.address != ip]


@check
def config_valid(d: Deploy) -> list[str]:
    problems = []
    for ip in POD_IPS:
        code, out = d.check_config(ip)
        if code != 0:
            problems.append(f"check-config exits {code} with the pod IP {ip}: {out.strip()}")
    return problems


@check
def config_read_only_root_owned(d: Deploy) -> list[str]:
    problems = []
    for mount, volume in d.mounts("configMap"):
        mode = volume["configMap"].get("defaultMode", 0o644)
        if mode & 0o022:
            problems.append(f"config files of mode {mode:o} are writable by others: hotplugd refuses them")
        if not mount.get("readOnly"):
            problems.append(f"{mount['mountPath']} is mounted read-write")
    return problems


@check
def no_dax_rules(d: Deploy) -> list[str]:
    rules = d.config().plugins.get("sysfs", {}).get("dax")
    return ["[[plugins.sysfs.dax]] in the pod: the check for processes mapping a device cannot see the "
            "node's processes without hostPID"] if rules else []


@check
def podmonitor_scrapes_the_pods(d: Deploy) -> list[str]:
    pm, labels = d.one("PodMonitor"), d.one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    problems = [f"the PodMonitor selects {k}={v}, which the pods lack" for k, v in
                pm["spec"]["selector"].get("matchLabels", {}).items() if labels.get(k) != v]
    names = {p.get("name") for p in d.container.get("ports", [])}
    ns = pm["spec"].get("namespaceSelector", {})
    if ns and not ns.get("any") and d.one("DaemonSet")["metadata"].get("namespace") not in ns.get("matchNames", []):
        problems.append("the PodMonitor's namespaceSelector leaves out the DaemonSet's namespace")
    rules_job = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if ep.get("port") not in names:
            problems.append(f"the PodMonitor scrapes port {ep.get('port')!r}; the container's are {sorted(names)}")
        if ep.get("path", "/metrics") != "/metrics":
            problems.append(f"the PodMonitor scrapes {ep.get('path')}")
        relabel = ep.get("relabelings", [])
        problems += [f"target label {r['targetLabel']!r} may clash with hotplugd's own labels" for r in relabel
                     if r.get("targetLabel") not in TARGET_LABELS]
        jobs = {r.get("replacement") for r in relabel if r.get("targetLabel") == "job"}
        if jobs != rules_job:
            problems.append(f"the scrape's job is {jobs or 'the operator default'}; the alert rules expect {rules_job}")
    return problems


@check
def namespace_admits_privileged(d: Deploy) -> list[str]:
    ns = d.one("Namespace")
    problems = [] if ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "privileged" else [
        "the namespace's Pod Security level refuses a privileged pod"]
    return problems + [f"{o['kind']} {o['metadata']['name']} is not in namespace {ns['metadata']['name']}"
                       for o in d.objects if o is not ns and o["metadata"].get("namespace") != ns["metadata"]["name"]]


def mutated(objects: list[dict[str, Any]], change: Callable[[list[dict[str, Any]]], Any]) -> list[dict[str, Any]]:
    broken = copy.deepcopy(objects)
    change(broken)
    return broken
