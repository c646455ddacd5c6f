"""Fixtures: private httpd servers running mod_tracellm.

- server / api: one server for the whole session, default configuration.
- small_server / small_api: a server with small limits
  (TraceLLMMaxBody 4096, TraceLLMSlowThreshold 1000), per module.
- project: a fresh project on the session server, (project_id, key).

Each server's error_log is checked when it is stopped: unexpected lines
(error level and above, warnings about tracellm) fail the run.
"""
import os

import pytest

from httpd import TllmServer, module_path, new_data_dir
from support import Api

# error_log lines that are expected (regexes).
ALLOWED_LOG = [
    # httpd's children being killed at stop are not the module's business
    r"AH00045|AH00046",
]

SMALL_CONF = "TraceLLMMaxBody 4096\nTraceLLMSlowThreshold 1000\n"


def _require_module():
    m = module_path()
    if not os.path.isfile(m):
        pytest.exit(f"module not built: {m} (run make, or set TLLM_MODULE)",
                    returncode=2)


def start_server(tag, **kw):
    _require_module()
    srv = TllmServer(new_data_dir(tag), **kw)
    try:
        srv.start()
    except BaseException:
        srv.stop()
        raise
    return srv


def finish_server(srv, allowed=()):
    srv.stop()
    bad = srv.check_error_log(list(ALLOWED_LOG) + list(allowed))
    if bad:
        # keep the data for a look
        raise AssertionError(
            f"unexpected error_log lines in {srv.error_log}:\n" + "\n".join(bad))
    srv.cleanup()


@pytest.fixture(scope="session")
def server():
    srv = start_server("main")
    yield srv
    finish_server(srv)


@pytest.fixture(scope="session")
def api(server):
    return Api(server.base)


@pytest.fixture(scope="module")
def small_server():
    srv = start_server("small", extra_conf=SMALL_CONF)
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def small_api(small_server):
    return Api(small_server.base)


@pytest.fixture
def project(api):
    """A fresh project on the session server: (project_id, key)."""
    return api.project()
