"""The harness's skip-or-fail rule (:mod:`harness.pytest_plugin`) without booting a guest.

Missing VM ingredients skip a test with a message saying how to enable it; with ``CI=true``
the same test fails. ``vm_assets`` and a ``guest_fixture`` guest are checked through an inner
pytest run with no QEMU on ``PATH``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import find_assets
from harness.assets import HINT
from harness.pytest_plugin import provisioned, require

INNER = """
from harness import GuestConfig
from harness.pytest_plugin import guest_fixture

guest = guest_fixture(GuestConfig())

def test_assets(vm_assets):
    pass

def test_guest(guest):
    pass
"""


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")


@pytest.mark.usefixtures("no_ci")
def test_require_skips_with_the_message_when_the_condition_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"^/x missing: install x$"):
        require(False, "/x missing: install x")
    with pytest.raises(pytest.skip.Exception, match="gone missing"):
        require(tmp_path / "gone", "gone missing")


@pytest.mark.usefixtures("no_ci")
def test_require_returns_when_the_condition_holds(tmp_path: Path) -> None:
    assert require(True, "unused") is None
    assert require(tmp_path, "unused") is None


@pytest.mark.usefixtures("ci")
def test_require_fails_under_ci_naming_why() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"^x missing \(CI=true: CI must provision the VM\)$"):
        require(False, "x missing")
    with pytest.raises(pytest.fail.Exception, match=r"^x missing \(CI=true: shared/ must be beside the clone\)$"):
        require(False, "x missing", ci_reason="shared/ must be beside the clone")


@pytest.mark.usefixtures("no_ci")
def test_provisioned_skips_on_a_tree_without_vm_assets(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=HINT):
        provisioned(find_assets, tmp_path)


@pytest.mark.usefixtures("ci")
def test_provisioned_fails_under_ci_on_a_tree_without_vm_assets(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=rf"{HINT} \(CI=true: CI must provision the VM\)"):
        provisioned(find_assets, tmp_path)


def test_provisioned_returns_what_it_finds() -> None:
    assert provisioned(lambda a, b=0: a + b, 1, b=2) == 3


def _run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    monkeypatch.setenv("PATH", str(pytester.path))  # no qemu-system-x86_64 to be found
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest_inprocess("-p", "harness.pytest_plugin", "-p", "no:asyncio", "-rsE")


@pytest.mark.usefixtures("no_ci")
def test_vm_fixtures_skip_without_qemu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run_inner(pytester, monkeypatch)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([f"SKIPPED *qemu-system-x86_64 is not installed: {HINT}"])


@pytest.mark.usefixtures("ci")
def test_vm_fixtures_fail_without_qemu_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run_inner(pytester, monkeypatch)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([f"*qemu-system-x86_64 is not installed: {HINT} (CI=true: CI must provision the VM)"])
