"""The real-kernel harness itself: boot, hot-add, virtio-mem, the agent's safety, QEMU's end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import GiB, Guest, GuestConfig, GuestError, HarnessError, agent
from harness.assets import Assets

pytestmark = pytest.mark.vm

SMALL = GuestConfig(memory="1G", slots=1, maxmem="4G", virtio_mem=False)


def _gone(pid: int, within: float = 10.0) -> bool:
    """True once no process ``pid`` exists (a zombie counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


# -- boot -------------------------------------------------------------------------------------


def test_guest_boots_with_marker_and_its_own_sysfs(guest: Guest) -> None:
    assert guest.alive()
    assert guest.agent.hello["kernel"].endswith("-amd64")
    cmdline = guest.agent.read_file("/proc/cmdline").split()
    assert agent.MARKER in cmdline and "memhp_default_state=offline" in cmdline
    mounts = guest.agent.run(["cat", "/proc/self/mounts"]).stdout
    assert "sysfs /sys sysfs" in mounts and "hostroot / 9p" in mounts
    blocks = guest.agent.memory_blocks()
    online = [b for b in blocks if b.online]
    # 2 GiB of boot memory, all online (the hole below 4 GiB may split it over more blocks).
    assert len(online) * guest.agent.block_size() >= GiB
    assert all(b.node == 0 for b in blocks)


def test_share_is_writable_from_the_guest(guest: Guest) -> None:
    guest.agent.write_file(f"{guest.guest_share}/hello.txt", "from the guest\n")
    assert (guest.share / "hello.txt").read_text() == "from the guest\n"


def test_host_python_and_venv_run_in_the_guest(guest: Guest) -> None:
    """This machine's interpreter (pyenv's, say) and the project's venv work in the guest over 9p.

    The guest has its own /tmp: a venv under this machine's /tmp is not visible there.
    """
    interpreter = os.path.realpath(sys.executable)
    r = guest.agent.run([interpreter, "-c", "import ssl, sqlite3, ctypes, sys; print(sys.version)"], timeout=120)
    assert r.stdout.split()[0] == sys.version.split()[0]
    venv_python = guest.assets.project / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip(f"{venv_python} not there yet (scripts/setup)")
    r = guest.agent.run([str(venv_python), "-c", "import sys, hotplugd; print(sys.prefix)"], timeout=120)
    assert r.stdout.strip() == str(guest.assets.project / ".venv")


# -- hot-add ----------------------------------------------------------------------------------


def test_pc_dimm_hot_add_gives_eight_offline_blocks(guest: Guest) -> None:
    before = {b.index for b in guest.agent.memory_blocks()}
    guest.qmp.hotplug_dimm(GiB)
    result = guest.agent.wait_blocks(exclude=before, min_count=8, state="offline", timeout=60)
    assert len(result.blocks) == GiB // guest.agent.block_size() == 8
    indices = sorted(b.index for b in result.blocks)
    assert indices == list(range(indices[0], indices[0] + 8))
    assert all("Movable" in b.valid_zones for b in result.blocks)


def test_virtio_mem_grow_gives_blocks_and_shrink_removes_them(guest: Guest) -> None:
    before = {b.index for b in guest.agent.memory_blocks()}
    start = guest.qmp.virtio_mem_size()
    guest.qmp.resize_virtio_mem(start + GiB)
    grown = guest.agent.wait_blocks(exclude=before, min_count=8, state="offline", timeout=60)
    assert len(grown.blocks) == 8
    guest.qmp.resize_virtio_mem(start)  # leave the session's guest as it was
    guest.agent.wait_blocks(exclude=before, max_count=0, timeout=60)
    assert {b.index for b in guest.agent.memory_blocks()} == before


def test_autoonline_guest_onlines_a_dimm(autoonline_guest: Guest) -> None:
    before = {b.index for b in autoonline_guest.agent.memory_blocks()}
    autoonline_guest.qmp.hotplug_dimm(GiB)
    result = autoonline_guest.agent.wait_blocks(exclude=before, min_count=8, state="online", timeout=60)
    assert len(result.blocks) == 8 and result.elapsed < 60


# -- background processes ---------------------------------------------------------------------


def test_background_process_is_stopped_by_a_signal(guest: Guest) -> None:
    script = "trap 'echo got TERM; exit 3' TERM; touch /run/bg.ready; while :; do sleep 0.05; done"
    proc = guest.agent.spawn(["/bin/sh", "-c", script])
    guest.agent.wait_path("/run/bg.ready", timeout=30)
    assert proc.poll().returncode is None
    result = proc.stop(signal.SIGTERM, timeout=10)
    assert result.returncode == 3 and "got TERM" in result.stdout


def test_foreground_command_times_out(guest: Guest) -> None:
    result = guest.agent.run(["sleep", "30"], timeout=0.5, check=False)
    assert result.timed_out and result.returncode is None


def test_start_hotplugd_runs_the_venv_entry_point(guest: Guest) -> None:
    try:
        path = guest.hotplugd_path()
    except HarnessError as exc:  # the venv is made by scripts/setup, possibly not yet
        pytest.skip(str(exc))
    proc = guest.start_hotplugd("--help", subcommand=())
    result = proc.wait(120)
    assert result.returncode == 0, f"{path} --help in the guest: {result.stderr}"


# -- the agent's marker check (on the host, no guest) -----------------------------------------


def test_agent_refuses_without_the_marker(tmp_path: Path) -> None:
    fake = tmp_path / "cmdline"
    fake.write_text("console=ttyS0 hotplugd.vmtest=0 xhotplugd.vmtest=1\n")
    with pytest.raises(agent.MarkerMissing):
        agent.require_marker(str(fake))
    with pytest.raises(agent.MarkerMissing):
        agent.Agent(cmdline_path=str(fake))
    assert agent.main(["--cmdline", str(fake)]) == 2


def test_agent_refuses_on_this_machine() -> None:
    """This machine's own command line has no marker: the agent must not even start here."""
    with pytest.raises(agent.MarkerMissing):
        agent.Agent()
    done = subprocess.run([sys.executable, agent.__file__], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to run" in done.stderr


def test_the_c_onliner_is_built_once_and_refuses_on_this_machine(tmp_path: Path) -> None:
    """bench/c_onliner.c (the benchmark's floor) writes sysfs: without the marker it must not start."""
    from onliners import build_c_onliner

    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler: apt-get install gcc to build bench/c_onliner.c")
    (tmp_path / "bench").mkdir()
    shutil.copy(Path(__file__).parents[2] / "bench" / "c_onliner.c", tmp_path / "bench")
    binary = build_c_onliner(tmp_path)
    built = binary.stat().st_mtime_ns
    assert build_c_onliner(tmp_path) == binary and binary.stat().st_mtime_ns == built  # not built again
    done = subprocess.run([str(binary), str(tmp_path / "ready")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to run" in done.stderr
    assert not (tmp_path / "ready").exists()


def test_agent_reads_blocks_only_with_the_marker(tmp_path: Path) -> None:
    fake = tmp_path / "cmdline"
    fake.write_text(f"console=ttyS0 {agent.MARKER}\n")
    mem = tmp_path / "memory"
    (mem / "memory40").mkdir(parents=True)
    (mem / "memory40" / "state").write_text("offline\n")
    (mem / "memory40" / "valid_zones").write_text("Normal Movable\n")
    (mem / "memory40" / "node1").mkdir()
    (mem / "block_size_bytes").write_text("8000000\n")
    a = agent.Agent(cmdline_path=str(fake), memory_root=str(mem), proc_dir=str(tmp_path / "procs"))
    assert a.rpc_memory_blocks() == {"block_size": 128 << 20, "blocks": [
        {"index": 40, "state": "offline", "valid_zones": ["Normal", "Movable"], "node": 1}]}
    assert a.rpc_wait_blocks(state="online", min_count=1, timeout=0)["ok"] is False


# -- QEMU's end -------------------------------------------------------------------------------


def test_qemu_is_gone_after_the_context_exits(vm_assets: Assets) -> None:
    with Guest(SMALL, vm_assets) as g:
        pid = g.pid
        assert pid is not None and g.agent.run(["true"]).returncode == 0
    assert _gone(pid, within=1)
    assert not g.workdir.exists()


def test_boot_timeout_kills_qemu(vm_assets: Assets) -> None:
    g = Guest(GuestConfig(memory="1G", slots=1, maxmem="4G", virtio_mem=False, boot_timeout=0.5), vm_assets)
    try:
        with pytest.raises(GuestError, match="did not boot"):
            g.start()
        assert g.pid is not None and _gone(g.pid, within=1)
    finally:
        shutil.rmtree(g.workdir, ignore_errors=True)


def test_qemu_dies_with_the_process_that_started_it(vm_assets: Assets, tmp_path: Path) -> None:
    pidfile = tmp_path / "qemu.pid"
    code = ("import sys; from pathlib import Path; from harness import Guest, GuestConfig; "
            f"Guest(GuestConfig(memory='1G', slots=1, maxmem='4G', virtio_mem=False, "
            f"qemu_args=('-pidfile', {str(pidfile)!r})), workdir=Path({str(tmp_path / 'w')!r})).start()")
    (tmp_path / "w").mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        qemu_pid = int(pidfile.read_text())
    finally:
        child.kill()
        child.wait()
    assert _gone(qemu_pid, within=10)
