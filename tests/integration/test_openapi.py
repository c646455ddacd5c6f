"""docs/openapi.json: the module's routes and the document agree both ways;
GET /openapi.json serves it byte for byte; GET /docs is the Swagger UI page
with its static assets; the document is a valid OpenAPI 3.1 document.

(Every response of the suite is also checked against the document: see
support.OpenApiContract.)"""
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
import requests
from jsonschema import Draft202012Validator

from conftest import finish_server, start_server
from httpd import REPO, apxs_q
from support import OPENAPI_FILE, Api, norm_ct

ROUTES_C = REPO / "mod_tracellm" / "mod_tracellm.c"
SWAGGER_DIST = REPO / "web" / "node_modules" / "swagger-ui-dist"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch",
                "trace")


def load_doc():
    with open(OPENAPI_FILE, encoding="utf-8") as f:
        return json.load(f)


# ---- (a) the route table and the document --------------------------------

def module_routes():
    """{(METHOD, pattern)} of the `routes[]` initializer in mod_tracellm.c;
    a "*" segment is a path parameter."""
    text = ROUTES_C.read_text()
    m = re.search(r"static\s+const\s+tllm_route\s+routes\[\]\s*=\s*\{(.*?)\n\};",
                  text, re.S)
    assert m, f"no routes[] initializer in {ROUTES_C}"
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    entries = re.findall(r'\{\s*"([A-Z]+)"\s*,\s*"([^"]*)"\s*,\s*\w+\s*'
                         r'(?:,\s*\w+\s*)?\}', body)
    # every brace group must have been understood
    assert len(entries) == body.count("{"), f"unparsed routes in: {body}"
    return {(meth, pattern) for meth, pattern in entries}


def document_routes(doc):
    """{(METHOD, pattern)} of the document, path templates written as the
    module writes them ("{trace_id}" -> "*"); HEAD/OPTIONS left out (the
    module answers HEAD as GET and has no OPTIONS route)."""
    out = set()
    for template, item in doc["paths"].items():
        pattern = re.sub(r"\{[^/{}]+\}", "*", template)
        for meth in item:
            if meth in HTTP_METHODS and meth not in ("head", "options"):
                out.add((meth.upper(), pattern))
    return out


def test_route_table_parsed():
    routes = module_routes()
    assert ("GET", "/traces") in routes and ("GET", "/traces/*") in routes


def test_every_route_is_documented():
    missing = module_routes() - document_routes(load_doc())
    assert not missing, f"routes of mod_tracellm.c not in docs/openapi.json: " \
                        f"{sorted(missing)}"


def test_every_documented_operation_is_a_route():
    extra = document_routes(load_doc()) - module_routes()
    assert not extra, f"operations of docs/openapi.json the module does not " \
                      f"route: {sorted(extra)}"


# ---- (b) GET /openapi.json ---------------------------------------------------

def test_openapi_json_served_byte_for_byte(api):
    r = api.get("/openapi.json")
    assert r.status_code == 200
    assert norm_ct(r.headers["Content-Type"]).split(";")[0] == "application/json"
    assert r.content == OPENAPI_FILE.read_bytes(), (
        "GET /openapi.json differs from docs/openapi.json: rebuild the module")


def test_openapi_json_under_a_mount():
    # A TraceLLM directive in the <Location>: without one the module does
    # not know its mount (reported; not this test's subject).
    srv = start_server("oa-mount", mount="/tracellm",
                       location_conf="TraceLLMSlowThreshold 1500")
    try:
        r = Api(srv.base).get("/openapi.json")
        assert r.status_code == 200
        assert r.content == OPENAPI_FILE.read_bytes()
    finally:
        finish_server(srv)


# ---- (c) GET /docs and the Swagger UI assets ------------------------------------

def docs_conf():
    """conf/docs-private.conf.in rendered for the test servers (as
    scripts/run renders it into DATA/conf.d/)."""
    text = (REPO / "conf" / "docs-private.conf.in").read_text()
    for k, v in (("@MODDIR@", apxs_q("LIBEXECDIR")),
                 ("@WEB@", str(REPO / "web"))):
        text = text.replace(k, v)
    return text


def require_swagger_dist():
    if SWAGGER_DIST.is_dir():
        return
    why = f"{SWAGGER_DIST} is absent (npm ci --prefix web, or scripts/test)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def docs_server():
    require_swagger_dist()
    srv = start_server("docs", extra_conf=docs_conf())
    yield srv
    finish_server(srv)


class AssetRefs(HTMLParser):
    """src/href URLs of a page's <script> and <link> elements, and its
    inline script text."""

    def __init__(self):
        super().__init__()
        self.urls = []
        self.inline = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])
        self._in_script = tag == "script" and not attrs.get("src")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.inline += data


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_docs_page(docs_server, path):
    r = Api(docs_server.base).get(path)
    assert r.status_code == 200
    assert norm_ct(r.headers["Content-Type"]).startswith("text/html")
    page = AssetRefs()
    page.feed(r.text)
    assert "/docs/static/swagger-ui-bundle.js" in page.urls, page.urls
    assert "/docs/static/swagger-ui.css" in page.urls, page.urls
    assert '"/openapi.json"' in page.inline, page.inline
    assert "SwaggerUIBundle(" in page.inline
    # Offline: nothing from another origin.
    for url in page.urls:
        assert not re.match(r"^([a-z]+:)?//", url), f"external asset {url}"


def test_docs_static_assets_load(docs_server):
    page_url = docs_server.base + "/docs"
    r = requests.get(page_url, timeout=30)
    page = AssetRefs()
    page.feed(r.text)
    expect = {".js": "javascript", ".css": "text/css"}
    for url in page.urls:
        a = requests.get(urljoin(page_url, url), timeout=30)
        assert a.status_code == 200, f"{url}: {a.status_code}"
        kind = expect[os.path.splitext(url)[1]]
        assert kind in a.headers.get("Content-Type", ""), (
            f"{url}: Content-Type {a.headers.get('Content-Type')}")
        local = SWAGGER_DIST / url.rsplit("/", 1)[1]
        assert a.content == local.read_bytes(), f"{url} is not {local}"


# ---- (d) the document is valid ------------------------------------------------

def test_document_is_canonical_json():
    """Pretty-printed with a stable key order: json.dumps(indent=2) of its
    own parse, so hand edits keep diffs readable."""
    text = OPENAPI_FILE.read_text(encoding="utf-8")
    again = json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    assert text == again, "docs/openapi.json is not in its canonical layout " \
                          "(json.dumps(doc, indent=2, ensure_ascii=False))"


VALIDATE_SCRIPT = """
import json, sys
from openapi_spec_validator import OpenAPIV31SpecValidator
doc = json.load(open(sys.argv[1], encoding="utf-8"))
for e in OpenAPIV31SpecValidator(doc).iter_errors():
    print("/".join(map(str, e.path)) + ": " + e.message[:300])
"""


def spec_validator_python():
    """A Python that has openapi-spec-validator (not packaged in Debian
    bookworm): this one, else the first other python3 on PATH that has it
    (e.g. a developer's pip install), else None."""
    candidates = [sys.executable]
    other = shutil.which("python3")
    if other and os.path.realpath(other) != os.path.realpath(sys.executable):
        candidates.append(other)
    for python in candidates:
        probe = subprocess.run([python, "-c",
                                "import openapi_spec_validator"],
                               capture_output=True)
        if probe.returncode == 0:
            return python
    return None


def test_document_is_valid_openapi_3_1():
    """With an independent OpenAPI 3.1 validator when one is installed;
    the structural tests below run in any case."""
    python = spec_validator_python()
    if python is None:
        pytest.skip("openapi-spec-validator is not installed; the "
                    "structural tests below still run")
    p = subprocess.run([python, "-c", VALIDATE_SCRIPT, str(OPENAPI_FILE)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and not p.stdout, p.stdout + p.stderr


def walk(node, path=()):
    """Every (path, dict) in the document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def resolve(doc, ref):
    assert ref.startswith("#/"), f"non-local $ref {ref}"
    node = doc
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"dangling $ref {ref}"
        node = node[token]
    return node


def test_document_header():
    doc = load_doc()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert "/ws" in doc["info"]["description"], "live events not described"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http",
                                     "scheme": "bearer"}
    assert schemes["apiKeyHeader"] == {**schemes["apiKeyHeader"],
                                       "type": "apiKey", "in": "header",
                                       "name": "X-API-Key"}
    assert doc["paths"]["/traces"]["post"]["security"] == [
        {"bearerAuth": []}, {"apiKeyHeader": []}]


def test_every_ref_resolves():
    doc = load_doc()
    for path, node in walk(doc):
        if isinstance(node.get("$ref"), str):
            resolve(doc, node["$ref"])


def test_every_schema_is_valid_json_schema_2020_12():
    doc = load_doc()
    seen = 0
    for path, node in walk(doc):
        named = len(path) == 3 and path[:2] == ("components", "schemas")
        inline = bool(path) and path[-1] == "schema"
        if named or inline:
            Draft202012Validator.check_schema(node)
            seen += 1
    assert seen > 40


def test_operations_are_well_formed():
    doc = load_doc()
    op_ids = []
    for template, item in doc["paths"].items():
        assert template.startswith("/")
        names = set(re.findall(r"\{([^}]+)\}", template))
        for meth, op in item.items():
            assert meth in HTTP_METHODS, f"{template}: {meth}"
            where = f"{meth.upper()} {template}"
            op_ids.append(op["operationId"])
            assert op.get("summary"), where
            params = [resolve(doc, p["$ref"]) if "$ref" in p else p
                      for p in op.get("parameters", [])]
            in_path = {p["name"] for p in params if p["in"] == "path"}
            assert in_path == names, f"{where}: path parameters {in_path}"
            for p in params:
                assert p["in"] in ("query", "path", "header"), where
                assert p["in"] != "path" or p["required"] is True, where
                assert "schema" in p, f"{where}: {p['name']} has no schema"
            assert op["responses"], where
            for status, resp in op["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]", status), where
                resp = resolve(doc, resp["$ref"]) if "$ref" in resp else resp
                assert resp.get("description"), f"{where} {status}"
                if status != "204":
                    assert resp.get("content"), f"{where} {status}: no content"
    assert len(op_ids) == len(set(op_ids)), "operationIds are not unique"


# The statuses each operation can answer (API.md; the order of checks in
# the handlers). The suite fails on a status the document does not list,
# so the document must list every one of these, and no other.
EXPECTED_STATUSES = {
    ("get", "/"): {200, 503},
    ("get", "/traces"): {200, 422, 500, 503},
    ("post", "/traces"): {200, 201, 400, 401, 403, 409, 411, 413, 415, 422,
                          500, 503},
    ("get", "/traces/{trace_id}"): {200, 404, 500, 503},
    ("get", "/analytics"): {200, 500, 503},
    ("get", "/failures"): {200, 422, 500, 503},
    ("get", "/projects"): {200, 500, 503},
    ("post", "/projects"): {201, 400, 409, 413, 415, 422, 500, 503},
    ("get", "/api-keys"): {200, 500, 503},
    ("post", "/api-keys"): {201, 400, 404, 413, 415, 422, 500, 503},
    ("delete", "/api-keys/{key_id}"): {204, 404, 500, 503},
    ("get", "/openapi.json"): {200},
    ("get", "/docs"): {200},
}


def test_every_status_is_documented():
    doc = load_doc()
    got = {(meth, template): {int(s) for s in op["responses"]}
           for template, item in doc["paths"].items()
           for meth, op in item.items()}
    assert got == EXPECTED_STATUSES
    for name in ("NotFound", "MethodNotAllowed"):
        assert name in doc["components"]["responses"]


def test_response_schemas_are_closed():
    """Fixed shapes refuse unknown fields, so a field the module adds or
    drops fails the suite until the document says so."""
    schemas = load_doc()["components"]["schemas"]
    for name in ("Trace", "Step", "TraceList", "BatchResult", "Analytics",
                 "AnalyticsSummary", "ChartBucket", "BreakdownItem",
                 "Failures", "FailureTotals", "Project", "ProjectCreated",
                 "NewApiKey", "ApiKey", "ApiKeyCreated", "Health", "HTTPError",
                 "ValidationError", "ValidationErrorItem"):
        s = schemas[name]
        assert s.get("additionalProperties") is False, name
        assert set(s["required"]) <= set(s["properties"]), name


def test_key_patterns():
    schemas = load_doc()["components"]["schemas"]

    def ok(schema, value):
        return Draft202012Validator(schema).is_valid(value)

    new = schemas["NewApiKey"]["properties"]["key"]
    listed = schemas["ApiKey"]["properties"]["key"]
    full = "tlm_sk_" + "aB3" * 10 + "xy"
    assert new["pattern"] == "^tlm_sk_[A-Za-z0-9]{32}$"
    assert ok(new, full) and not ok(new, full + "z")
    assert ok(listed, "tlm_sk_aB\u2026y9xy") and not ok(listed, full)
    ts = schemas["Timestamp"]
    assert ok(ts, "2026-05-31T14:22:10.123456+00:00")
    assert not ok(ts, "2026-05-31T14:22:10Z")
    assert not ok(ts, "2026-05-31T14:22:10.123+00:00")
