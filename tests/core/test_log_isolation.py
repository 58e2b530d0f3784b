"""The suite's structlog isolation (tests/conftest.py): a level filter one test leaves does not reach the next.

In order within this module: the first test configures a filter as ``hotplugd``'s ``logs.configure`` does for
an in-process CLI run; the second captures an info line with structlog's ``capture_logs``, which replaces the
processors only and so would see nothing behind that filter (as test_boot_memory.py did in a full CI run).
"""

import logging

import structlog
from structlog.testing import capture_logs


def test_a_test_leaves_a_warning_filter_behind():
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def test_the_next_test_captures_info_lines_all_the_same():
    with capture_logs() as logs:
        structlog.get_logger().info("seen")
    assert [e["event"] for e in logs] == ["seen"]
