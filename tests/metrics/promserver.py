"""A real Prometheus server (Debian's package) on loopback, for tests: start, query, stop."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

START_TIMEOUT = 30.0
POLL = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    """``prometheus`` scraping ``target`` every second (job ``hotplugd``), data in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, target: str, rule_files: list[Path] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        rules = "".join(f"  - {path}\n" for path in rule_files)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + f"scrape_configs:\n  - job_name: hotplugd\n    static_configs:\n      - targets: ['{target}']\n")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL)
        raise AssertionError(f"prometheus not ready after {START_TIMEOUT} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer (raises on an error answer)."""
        url = f"{self.base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"{url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return self.api("query", query=expr)["result"]

    def wait_for_value(self, expr: str, expected: float, timeout: float = 30.0) -> float | None:
        """Poll ``expr`` (one-element result) until it equals ``expected``; return the last value seen."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                last = float(result[0]["value"][1])
                if last == expected:
                    return last
            time.sleep(POLL)
        return last

    def wait_alerts_settled(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Active alerts once none is left over from before the first scrape (``absent(up)`` at start)."""
        deadline = time.monotonic() + timeout
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        while alerts and time.monotonic() < deadline:
            time.sleep(POLL)
            alerts = self.api("alerts")["alerts"]
        return alerts

    def wait_rules_evaluated(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every loaded rule, once each has been evaluated at least once."""
        deadline = time.monotonic() + timeout
        rules: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rules = [r for g in self.api("rules")["groups"] for r in g["rules"]]
            if rules and all(r.get("health") != "unknown" for r in rules):
                return rules
            time.sleep(POLL)
        raise AssertionError(f"rules not evaluated after {timeout} s: {rules}")
