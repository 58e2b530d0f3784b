"""Test kit for hotplugd and its plugin authors: a fake host, an event injector, a hook recorder.

Also a pytest plugin with fixtures built from these, opt-in (``-p hotplugd.testing.pytest_plugin``):
see :mod:`hotplugd.testing.pytest_plugin`.
"""

from hotplugd.testing.clock import ManualClock, wait_until
from hotplugd.testing.fakehost import FakeBackend, FakeHost
from hotplugd.testing.recorder import HookRecorder
from hotplugd.testing.runner import running
from hotplugd.testing.samples import sample

__all__ = ["FakeBackend", "FakeHost", "HookRecorder", "ManualClock", "running", "sample", "wait_until"]
