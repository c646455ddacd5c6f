"""/docs in a real browser: runs tests/browser/docs.test.mjs (node,
playwright-core from web/node_modules, Debian's /usr/bin/chromium) against
a server with the Swagger UI assets configured. Its screenshot is left in
build/docs-screenshot.png.

Without Chromium, node or playwright-core the test is skipped, except
under CI (env CI set), where that is a failure: the scripts install them."""
import os
import shutil
import subprocess

import pytest

from conftest import finish_server, start_server
from httpd import REPO
from test_openapi import docs_conf, require_swagger_dist

BROWSER_TEST = REPO / "tests" / "browser" / "docs.test.mjs"
CHROMIUM = "/usr/bin/chromium"
PLAYWRIGHT = REPO / "web" / "node_modules" / "playwright-core"
SCREENSHOT = REPO / "build" / "docs-screenshot.png"


def require_browser_tools():
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not PLAYWRIGHT.is_dir():
        missing.append(f"{PLAYWRIGHT} (npm ci --prefix web)")
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs)")
    if not missing:
        return
    why = "browser test needs " + ", ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def docs_server():
    require_browser_tools()
    require_swagger_dist()
    srv = start_server("browser", extra_conf=docs_conf())
    yield srv
    finish_server(srv)


def test_docs_in_chromium(docs_server):
    if SCREENSHOT.exists():
        SCREENSHOT.unlink()
    env = dict(os.environ, TLLM_BASE=docs_server.base)
    p = subprocess.run(["node", str(BROWSER_TEST)], cwd=REPO, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=300)
    assert p.returncode == 0, f"node {BROWSER_TEST} failed:\n{p.stdout}"
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 0, \
        f"no screenshot at {SCREENSHOT}"
