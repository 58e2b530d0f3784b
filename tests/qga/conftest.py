"""The qga backend's tests: fake agents and monitors on unix sockets (``qga_fakes``), no guest."""

from __future__ import annotations

import sys
from pathlib import Path

# Make ``qga_fakes`` importable whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
