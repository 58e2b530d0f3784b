"""The libvirt backend's tests: a fake libvirt (``fake_libvirt``) for the logic, a private libvirtd for the rest."""

from __future__ import annotations

import sys
from pathlib import Path

# Make ``fake_libvirt`` and ``domains`` importable whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
