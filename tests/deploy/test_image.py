"""deploy/container/Containerfile's final stage, run: the image's own steps in a clean Debian 13 root.

No container engine here (and no registry to pull debian:trixie-slim from): the final stage runs in
an overlay of the Debian 13 root ``scripts/provision-deb`` makes with ``debootstrap`` (.vm/trixie/root,
which holds more than trixie-slim: the build dependencies) with the packages it built from debian/
(.vm/trixie/out), as the build stage's ``dpkg-buildpackage -us -uc -b`` makes them. Its COPY takes
the .debs the Containerfile names, its RUN lines run verbatim (apt-get from Debian's archive), and
the DaemonSet's command line then runs in the result, the ConfigMap's file at /etc/hotplugd, through
the packaged hotplugd on Debian's own Python libraries: ``check-config`` must accept it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from harness.pytest_plugin import require

from hotplugd_sysfs.testing import FakeSysfs

from .manifests import CONTAINERFILE, ROOT, Deploy, expand, render

TRIXIE = ROOT / ".vm" / "trixie"
POD_IP = "10.244.3.7"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def final_stage() -> list[tuple[str, str]]:
    """The last stage's instructions: (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    stage = text.rsplit("\nFROM ", 1)[1].splitlines()[1:]
    return [(line.split(None, 1)[0], line.split(None, 1)[1].strip()) for line in stage
            if line.strip() and not line.lstrip().startswith("#")]


class Image:
    """An overlay of the Debian root (the lower layer stays as it is), entered by chroot in a mount namespace."""

    def __init__(self, lower: Path, work: Path) -> None:
        self.lower, self.upper, self.work, self.merged = lower, work / "upper", work / "work", work / "merged"
        for d in (self.upper, self.work, self.merged):
            d.mkdir()

    def run(self, argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        m = shlex.quote(str(self.merged))
        mount = (f"mount -t overlay overlay -o lowerdir={shlex.quote(str(self.lower))},"
                 f"upperdir={shlex.quote(str(self.upper))},workdir={shlex.quote(str(self.work))} {m} && "
                 f"mount -t proc proc {m}/proc && mount -t devpts -o newinstance devpts {m}/dev/pts && "
                 f"exec chroot {m} " + shlex.join(argv))
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", mount], env=ENV,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def file(self, path: str) -> Path:
        """Where to write ``path`` of the image (its upper layer)."""
        target = self.upper / path.lstrip("/")
        for part in reversed(Path(path.lstrip("/")).parents[:-1]):  # each directory as the lower layer has it
            upper, lower = self.upper / part, self.lower / part
            if not upper.exists():
                upper.mkdir()
                if lower.is_dir():  # an upper directory's mode wins (/tmp's 1777 matters to apt's _apt user)
                    st = lower.stat()
                    os.chown(upper, st.st_uid, st.st_gid)
                    upper.chmod(stat.S_IMODE(st.st_mode))
        return target


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    debs = sorted((TRIXIE / "out").glob("*.deb"))
    require((TRIXIE / "root" / "usr" / "bin" / "apt-get").exists() and bool(debs),
            "no Debian 13 root with hotplugd's packages built in it: run scripts/provision-deb")
    require("overlay" in Path("/proc/filesystems").read_text(), "no overlayfs on this machine")
    img = Image(TRIXIE / "root", tmp_path_factory.mktemp("image"))
    shutil.copy2("/etc/resolv.conf", img.file("/etc/resolv.conf"))  # apt-get update, as a build has the host's
    for instruction, args in final_stage():
        if instruction == "COPY":  # COPY --from=build /debs/ /tmp/debs/: the .debs the build stage moved there
            dest = args.split()[-1]
            moved = re.findall(r"\.\./([a-z0-9][a-z0-9+.-]*_\*\.deb)", CONTAINERFILE.read_text())
            for deb in debs:
                if any(Path(deb.name).match(glob) for glob in moved):
                    shutil.copy2(deb, img.file(dest + deb.name))
        elif instruction == "RUN":
            done = img.run(["/bin/sh", "-ec", args])
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return img


def test_the_image_has_the_packages_and_nothing_left_of_its_build(image: Image):
    shown = image.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", "hotplugd", "python3-hotplugd"])
    assert shown.stdout.splitlines() == ["hotplugd install ok installed", "python3-hotplugd install ok installed"]
    entrypoint = next(json for inst, json in final_stage() if inst == "ENTRYPOINT")
    assert image.run(["test", "-x", entrypoint.strip('[]"')]).returncode == 0
    assert image.run(["test", "-e", "/tmp/debs"]).returncode != 0
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert image.run(["hotplugd", "--version"]).stdout.split() == ["hotplugd", version]


def test_the_packaged_hotplugd_accepts_the_daemonsets_command_line(image: Image, tmp_path: Path):
    """The container's command and args, ``run`` as ``check-config``, with the ConfigMap as the pod mounts it."""
    deploy = Deploy(render(), tmp_path)
    config = deploy.one("ConfigMap")["data"]["hotplugd.toml"]
    path = image.file("/etc/hotplugd/hotplugd.toml")
    path.unlink(missing_ok=True)  # the package's conffile, hidden by the ConfigMap's volume in the pod
    path.write_text(config)
    path.chmod(0o444)
    c = deploy.container
    args = [expand(a, {"POD_IP": POD_IP}) for a in c["args"]]
    assert args[0] == "run"
    done = image.run([*c["command"], "check-config", *args[1:]])
    assert done.returncode == 0, done.stderr
    assert "OK (backend sysfs)" in done.stdout


#: docs/kubernetes.md's uninstall step, as `kubectl debug node/NODE --profile=sysadmin --image=...` runs it in the
#: image: the node's root at /host.
RESTORE = ["hotplugd", "restore-knobs", "--set", "plugins.sysfs.root=/host/sys",
           "--set", "state_directory=/host/var/lib/hotplugd"]


def test_the_uninstall_step_restores_the_knobs_from_the_nodes_record(image: Image):
    """The node (a fake sysfs tree at /host/sys: the image's own /sys is an empty directory here) has the
    knobs as the pods set them and the record the first pod wrote in its hostPath."""
    assert shlex.join(RESTORE) in (ROOT / "docs" / "kubernetes.md").read_text()
    host = image.file("/host/sys").parent
    # Plain files, not sysfs: a write does not truncate, so each value restored is at least as long as the one set.
    fake = FakeSysfs(host, nodes={0: "0-1"}, auto_online_blocks="online")
    fake.set_param("online_policy", "auto-movable")
    record = image.file("/host/var/lib/hotplugd/kernel-knobs.json")
    record.write_text(json.dumps({"host": {"auto_online_blocks": "offline", "online_policy": "contig-zones"},
                                  "recorded_at": "2026-12-04T20:00:00+00:00"}))
    done = image.run(RESTORE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (fake.knob("auto_online_blocks"), fake.knob("online_policy")) == ("offline", "contig-zones")
    assert not record.exists()
