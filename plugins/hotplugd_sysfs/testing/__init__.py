"""The sysfs plugin's test kit: a Linux host's memory as files, for the sysfs backend and any plugin built on it.

Public, like :mod:`hotplugd.testing` (which keeps what any plugin needs: the fake clock, the hook recorder,
``running``, a fake in-memory backend, the pytest fixtures); what plays a Linux host lives here, with the
plugin that reads one:

- :mod:`hotplugd_sysfs.testing.fakesysfs`: :class:`FakeSysfs`, a fake ``/sys`` + ``/proc`` tree under a
  directory whose ``state`` writes act like the kernel (its knobs, zones, the seed's deferred onlining), and
  its uevents as the kernel sends them; the tree's files are that module's, its kernel
  :mod:`hotplugd_sysfs.testing.fakehotplug`'s (hot-adds, writes to ``state`` and the knobs, the final phase),
  its file seam :mod:`hotplugd_sysfs.testing.fakeio`'s (:class:`FakeSysfsIO`, the backend's ``io``);
- :mod:`hotplugd_sysfs.testing.fakedax`: :class:`FakeDax`, a dax bus on that tree (devices, the device_dax and
  kmem drivers, processes mapping a device);
- :mod:`hotplugd_sysfs.testing.fakekernel`: the fake kernel's decisions (knob values, an online's zone);
- :mod:`hotplugd_sysfs.testing.pytest_plugin`: the ``fake_sysfs`` fixture (opt-in:
  ``pytest -p hotplugd_sysfs.testing.pytest_plugin``).

::

    from hotplugd_sysfs import SysfsBackend
    from hotplugd_sysfs.testing import FakeSysfs

    fake = FakeSysfs(tmp_path, nodes={0: "0-3", 1: "4-7"})
    fake.add_blocks(range(64, 72), node=1)
    backend = SysfsBackend.from_options(fake.options(), io=fake.io)
"""

from hotplugd_sysfs.testing.fakedax import FakeDax
from hotplugd_sysfs.testing.fakeio import FakeSysfsIO
from hotplugd_sysfs.testing.fakesysfs import FakeSysfs

__all__ = ["FakeDax", "FakeSysfs", "FakeSysfsIO"]
