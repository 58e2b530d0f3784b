"""Test kit for hotplugd and its plugin authors: a fake host, an event injector, a hook recorder.

Also a pytest plugin (entry point ``pytest11``: ``hotplugd``) with fixtures
built from these: see :mod:`hotplugd.testing.pytest_plugin`.
"""

from hotplugd.testing.clock import ManualClock, wait_until
from hotplugd.testing.fakehost import FakeBackend, FakeHost
from hotplugd.testing.recorder import HookRecorder
from hotplugd.testing.runner import running
from hotplugd.testing.samples import sample

__all__ = ["FakeBackend", "FakeHost", "HookRecorder", "ManualClock", "running", "sample", "wait_until"]
