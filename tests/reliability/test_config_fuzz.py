"""Generated configs and ``--set`` strings thrown at ``hotplugd check-config``: it answers 0 or 78, never a traceback.

The documents are built from the schema's own keys (so the values reach the
parsers, the bounds and the plugins' checks), from random keys, and from the
reference config with random text spliced in (so the bytes reach tomllib).
Each example runs the whole command through ``main()``; only what does not
depend on the config (the parser, the plugin manager) is built once.
``bench/fuzz_config.py`` runs the same property coverage-guided for 100,000+ inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotplugd import config as cfgmod

from .checkconfig import check_config, dotted, reused_plugins, toml_value

pytestmark = pytest.mark.reliability

REFERENCE = (Path(__file__).resolve().parents[2] / "config" / "hotplugd.toml").read_text()
PLUGIN_KEYS = ["plugins.simulated.nodes", "plugins.simulated.block_size", "plugins.simulated.lock",
               "plugins.simulated.scenario", "plugins.sysfs.concurrency", "plugins.sysfs.rcvbuf",
               "plugins.qga.guest", "plugins.qga.max_batch", "plugins.qga.timeout", "zones.nodes.1.policy"]


keys = st.one_of(st.sampled_from([key for key, _default, _help in cfgmod.describe()] + PLUGIN_KEYS),
                 st.text(min_size=1, max_size=12))
scalars = st.one_of(
    st.booleans(), st.floats(), st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64, cfgmod.MAX_BLOCKS, cfgmod.MAX_BLOCKS + 1, 1023, 1024]),
    st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{1,5})?\s?(B|KiB|MiB|GiB|TiB|k|ms|us|s|min|x)?\Z"),
    st.sampled_from(["auto", "kernel", "movable", "global", "simulated", "sysfs", "dimm", "EBUSY"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
documents = st.one_of(
    st.lists(st.tuples(keys, values), max_size=8).map(
        lambda pairs: "".join(f"{dotted(k)} = {toml_value(v)}\n" for k, v in pairs)),
    st.tuples(st.integers(0, len(REFERENCE)), st.text(max_size=40)).map(
        lambda cut: REFERENCE[:cut[0]] + cut[1] + REFERENCE[cut[0]:]),
    st.text(max_size=200),
)
overrides = st.one_of(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={toml_value(kv[1])}"), st.text(max_size=60))


@pytest.fixture(scope="module")
def fast():
    with reused_plugins():
        yield


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "hotplugd.toml"


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(document=st.one_of(documents, st.binary(max_size=200)), sets=st.lists(overrides, max_size=3))
def test_check_config_answers_0_or_78_for_any_document_and_overrides(fast, config_path, document, sets):
    config_path.write_bytes(document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document)
    config_path.chmod(0o644)
    check_config(["--config", str(config_path), *(f"--set={s}" for s in sets)])
