"""hotplugd as deploy/kubernetes/ runs it, on the real guest kernel, without a cluster.

The guest makes the pod as a container runtime would: new mount, network and PID namespaces
(no hostNetwork, no hostPID) owned by the initial user namespace (no hostUsers: false), a root
overlaid on the machine's own (read-only, as readOnlyRootFilesystem says; no tmpfs on /run or
/tmp), the host's /sys and /var/lib/hotplugd bind-mounted at the DaemonSet's mount paths (its
hostPaths), the ConfigMap's file at /etc/hotplugd, the pod's IP on the namespace's loopback, and
the container's own command line, ``$(POD_IP)`` expanded as the kubelet does (the image's
/usr/bin/hotplugd being the checkout's). A DIMM hot-added then comes online, and the endpoint at
the pod's IP (the probes' and the PodMonitor's) counts its uevents and its blocks. Beside it, two
bare uevent sockets check what docs/kubernetes.md says of the kernel: one in a network namespace
of the initial user namespace gets the DIMM's events, one in a user namespace's gets none
(``uevent_net_init`` in lib/kobject_uevent.c).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import GiB, Guest, GuestConfig, GuestError
from harness.pytest_plugin import guest_fixture

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
CONFIG = GuestConfig(memhp_default_state="offline", memory="2G", cpus=2, slots=8, maxmem="32G", virtio_mem=False)
POD_IP = "10.244.0.5"  # on the pod namespace's own loopback: no traffic leaves the guest's namespace
POD = "/run/pod"  # the "node's" side of the pod: overlay layers, the hostPath of the state directory

guest = guest_fixture(CONFIG, doc="A guest of this module's own: the pod sets the kernel's onlining knobs.")

# The runtime's part, run by `unshare --mount --net --pid --fork --propagation private`: "$1" is the
# overlay module, "$2" the config file, the rest the container's command line.
MAKE_POD = r"""
set -eu
overlay=$1 config=$2; shift 2
R=$POD/root
grep -qw overlay /proc/filesystems || /usr/bin/python3 -c '
import ctypes, os, sys  # finit_module(2): this machine, whose root the guest runs, may have no insmod
fd = os.open(sys.argv[1], os.O_RDONLY)
sys.exit(0 if ctypes.CDLL(None, use_errno=True).syscall(313, fd, b"", 0) == 0 else ctypes.get_errno())' "$overlay"
mkdir -p $POD/upper $POD/work $POD/state $R
mount -t overlay overlay -o lowerdir=/,upperdir=$POD/upper,workdir=$POD/work $R
mount -t proc proc $R/proc
mount --rbind /dev $R/dev
mount --bind /sys $R/sys && mount -o remount,bind,ro $R/sys
MOUNTS
mkdir -p $R/etc/hotplugd && cp "$config" $R/etc/hotplugd/hotplugd.toml && chmod 0444 $R/etc/hotplugd/hotplugd.toml
[ "$READ_ONLY_ROOT" != True ] || mount -o remount,ro $R
ip link set lo up && ip addr add $POD_IP/32 dev lo
exec chroot $R /usr/bin/env POD_IP=$POD_IP "$@"
"""

# A bare uevent socket: counts the memory "add" events it gets until the stop file appears.
LISTEN = r"""
import socket, sys, os, time
out = sys.argv[1]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15)
s.bind((0, 1))
s.settimeout(0.2)
open(out, "w").write("0\n")
count = 0
while not os.path.exists(out + ".stop"):
    try:
        msg = s.recv(65536)
    except socket.timeout:
        continue
    if msg.startswith(b"add@") and b"SUBSYSTEM=memory" in msg:
        count += 1
        open(out, "w").write(f"{count}\n")
"""


def manifests() -> tuple[dict[str, Any], str]:
    """The DaemonSet's pod spec and the ConfigMap's config, as shipped."""
    docs = [d for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"
            for d in yaml.safe_load_all(p.read_text())]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    return ds["spec"]["template"]["spec"], cm["data"]["hotplugd.toml"]


def host_path_mounts(pod: dict[str, Any]) -> str:
    """Shell lines binding each hostPath volume at its mount path, read-only where the pod says."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    lines = []
    for m in pod["containers"][0]["volumeMounts"]:
        spec = volumes[m["name"]].get("hostPath")
        if spec is None:
            continue
        host, target = spec["path"], "$R" + m["mountPath"]
        if host == "/var/lib/hotplugd":
            source = "$POD/state"  # the "node's" state directory, kept across pods
        else:  # DirectoryOrCreate: the kubelet makes a missing one (here beside the guest's read-only root)
            source = "$src"
            lines.append(f"src={host}; [ -d $src ] || {{ [ {spec.get('type')} = DirectoryOrCreate ]"
                         f" && src=$POD/created{host} && mkdir -p $src; }}")
        lines.append(f"mkdir -p {target} && mount --bind {source} {target}")
        if m.get("readOnly"):
            lines.append(f"mount -o remount,bind,ro {target}")
    return "\n".join(lines)


def container_argv(pod: dict[str, Any], guest: Guest) -> list[str]:
    """The container's command and args, ``$(POD_IP)`` expanded; the image's hotplugd is the checkout's."""
    c = pod["containers"][0]
    assert c["command"] == ["/usr/bin/hotplugd"]
    assert [e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if e["name"] == "POD_IP"] == ["status.podIP"]
    return [str(guest.hotplugd_path()), *(re.sub(r"\$\(POD_IP\)", POD_IP, a) for a in c["args"])]


def overlay_module(guest: Guest) -> str:
    kernel = guest.assets.kernel  # .vm/kernel/boot/vmlinuz-VERSION
    version = kernel.name.removeprefix("vmlinuz-")
    return str(kernel.parent.parent / "lib" / "modules" / version / "kernel" / "fs" / "overlayfs" / "overlay.ko")


def scrape(guest: Guest, pid: int, port: int, timeout: float = 10) -> str | None:
    """GET /metrics at the pod's IP from inside its network namespace (as the kubelet's probe); None: no answer."""
    code = (f"import urllib.request; print(urllib.request.urlopen('http://{POD_IP}:{port}/metrics', "
            f"timeout={timeout}).read().decode())")
    r = guest.agent.run(["nsenter", "-t", str(pid), "-n", "/usr/bin/python3", "-c", code], timeout=timeout + 30,
                        check=False)
    return r.stdout if r.returncode == 0 else None


def total(text: str, name: str, **labels: str) -> float:
    out = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m[1] or "") for k, v in labels.items()):
            out += float(m[2])
    return out


def wait_for(what: str, fn, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise GuestError(f"{what} within {timeout} s")
        time.sleep(interval)


def test_the_pod_onlines_a_hot_added_dimm_and_serves_its_metrics_on_the_pod_ip(guest: Guest):
    pod, config = manifests()
    port = next(p["containerPort"] for p in pod["containers"][0]["ports"] if p["name"] == "metrics")
    share, gshare = guest.share, guest.guest_share
    (share / "hotplugd.toml").write_text(config)
    (share / "listen.py").write_text(LISTEN)

    # The kernel's side: a socket in a network namespace of the initial user namespace, one in a user namespace's.
    listeners = {
        "netns": guest.agent.spawn(["unshare", "--net", "/usr/bin/python3", f"{gshare}/listen.py", f"{gshare}/netns"]),
        "userns": guest.agent.spawn(["unshare", "--user", "--map-root-user", "--net", "/usr/bin/python3",
                                     f"{gshare}/listen.py", f"{gshare}/userns"]),
    }
    for name in listeners:
        guest.agent.wait_path(f"{gshare}/{name}", timeout=120)

    script = MAKE_POD.replace("MOUNTS", host_path_mounts(pod))
    runtime = guest.agent.spawn(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--propagation", "private", "/bin/sh", "-c", script, "pod",
         overlay_module(guest), f"{gshare}/hotplugd.toml", *container_argv(pod, guest)],
        env={"POD": POD, "POD_IP": POD_IP, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
             "READ_ONLY_ROOT": str(pod["containers"][0]["securityContext"].get("readOnlyRootFilesystem") is True)})
    try:
        # The startup probe: the endpoint answers once the coldplug scan is done (READY).
        def started() -> str | None:
            if (state := runtime.poll()).returncode is not None:
                pytest.fail(f"the pod exited {state.returncode}:\n{state.stderr[-4000:]}")
            return scrape(guest, runtime.pid, port)

        text = wait_for("the pod's endpoint never answered", started, timeout=240, interval=2)
        assert 'hotplugd_build_info{backend="sysfs"' in text
        # Its uevent socket is in the pod's network namespace, not the guest's.
        namespaces = guest.agent.run(["readlink", "/proc/1/ns/net", f"/proc/{runtime.pid}/ns/net"]).stdout.split()
        assert namespaces[0] != namespaces[1]
        # Its root is read-only: hotplugd writes only to the hostPaths.
        touch = guest.agent.run(["nsenter", "-t", str(runtime.pid), "-m", "touch", f"{POD}/root/etc/written"],
                                check=False)
        assert touch.returncode != 0 and "Read-only" in touch.stderr, touch

        before = {b.index for b in guest.agent.memory_blocks()}
        guest.qmp.hotplug_dimm(GiB)
        blocks = guest.agent.wait_blocks(exclude=before, min_count=8, state="online", timeout=120).blocks
        assert len(blocks) == 8
        text = wait_for("the pod never counted the DIMM's 8 add events and blocks", lambda: (
            (t := scrape(guest, runtime.pid, port)) and total(t, "hotplugd_uevents_received_total", action="add") >= 8
            and total(t, "hotplugd_kernel_onlined_blocks_total") + total(t, "hotplugd_blocks_onlined_total") >= 8
            and t), timeout=60)
        # `kubectl exec ... hotplugd status` (docs/kubernetes.md): the pod's memory, and the daemon's view
        # read from the endpoint at the pod's IP.
        hotplugd = container_argv(pod, guest)[0]
        status = guest.agent.run(
            ["nsenter", "-t", str(runtime.pid), "-n", "-m", "-p", "-F", "chroot", f"{POD}/root", hotplugd, "status",
             "--config", "/etc/hotplugd/hotplugd.toml", f"--set=metrics.address={POD_IP}"], timeout=120, check=False)
        assert status.returncode == 0 and "not running" not in status.stdout, status
        # The knobs' record went to the hostPath, where the next pod finds it.
        assert "auto_online_blocks" in guest.agent.read_file(f"{POD}/state/kernel-knobs.json")

        counts = {name: int(guest.agent.read_file(f"{gshare}/{name}")) for name in listeners}
        assert counts["netns"] >= 8, counts  # a network namespace of the initial user namespace: every event
        assert counts["userns"] == 0, counts  # a user namespace's: none (uevent_net_init)
    finally:
        for name, proc in listeners.items():
            (share / f"{name}.stop").write_text("")
            proc.wait(10)
        children = guest.agent.run(["cat", f"/proc/{runtime.pid}/task/{runtime.pid}/children"], check=False).stdout
        for pid in children.split():
            guest.agent.run(["kill", "-TERM", pid], check=False)
        result = runtime.wait(30)
        if result.returncode is None:
            runtime.stop(signal.SIGKILL)
    assert result.returncode == 0, result.stderr[-4000:]  # SIGTERM: a clean stop
    assert '"event": "stopped"' in result.stderr

