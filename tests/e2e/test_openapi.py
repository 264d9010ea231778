"""docs/openapi.yaml: served at GET /openapi.yaml on the admin listener, well-formed, and describing
every route the server has (conftest.py validates every JSON reply of the suite against it)."""

import re

import pytest

from conftest import OpenAPI, assert_error

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def test_the_description_is_well_formed():
    import jsonschema
    spec = OpenAPI.get().spec
    assert spec["openapi"] == "3.1.0"
    text = open(OpenAPI.PATH).read()
    # every $ref resolves, every schema is a valid JSON Schema 2020-12
    resolver = jsonschema.RefResolver.from_schema(spec)
    for ref in sorted(set(re.findall(r'\$ref: "([^"]+)"', text))):
        resolver.resolve(ref)
    for name, schema in spec["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    for tmpl, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"].get("default"), f"{method} {tmpl}: no default (error) response"
            for p in re.findall(r"\{([a-z]+)\}", tmpl):
                params = [OpenAPI.get()._deref(x) for x in item.get("parameters", []) + op.get("parameters", [])]
                assert any(x["name"] == p and x["in"] == "path" for x in params), (tmpl, p)
    # the error codes are those of src/error.h
    codes = re.findall(r'XX\(\w+, \d+, "(\w+)"', open(OpenAPI.PATH.replace("docs/openapi.yaml",
                                                                           "src/error.h")).read())
    assert spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"] == codes


@sqlite_only
def test_served_on_the_admin_listener_only(make_server):
    srv = make_server(token="t0k", env={"SECKILL_ADMIN_TOKEN": "t0k"})
    r = srv.adm("GET", "/openapi.yaml")
    assert r.status == 200 and r.headers["content-type"] == "application/yaml", r
    assert r.raw == open(OpenAPI.PATH, "rb").read()
    assert_error(srv.adm("GET", "/openapi.yaml", token="wrong"), 401, "unauthorized")
    assert_error(srv.pub("GET", "/openapi.yaml"), 404, "not_found")
    assert_error(srv.adm("POST", "/openapi.yaml", token="t0k"), 405, "method_not_allowed")


@sqlite_only
def test_every_described_route_exists_and_every_route_is_described(server, sale_id):
    """Each (method, path) of the description answers something other than 404 not_found or 405;
    and the routes of API.md are all in the description."""
    s = sale_id()
    server.put_sale(s, stock=5, hold_seconds=60)
    order = server.take(s, user="u").body["order"]
    spec = OpenAPI.get().spec
    seen = set()
    for tmpl, item in spec["paths"].items():
        path = tmpl.replace("{sale}", s).replace("{order}", order)
        for method in item:
            if method == "parameters":
                continue
            seen.add((method.upper(), tmpl))
            if tmpl == "/v1/events":
                continue  # an endless stream; the dashboard's tests read it
            body = {"stock": 5} if method == "put" else ({"user": "v"} if tmpl.endswith("/orders") else None)
            r = server.adm(method.upper(), path, body)
            assert r.status not in (404, 405) or r.body.get("error") not in ("not_found", "method_not_allowed"), \
                (method, tmpl, r)
    want = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/openapi.yaml"), ("GET", "/"), ("GET", "/v1/events"),
            ("GET", "/v1/orders"), ("GET", "/v1/sales"), ("GET", "/v1/sales/{sale}"), ("PUT", "/v1/sales/{sale}"),
            ("DELETE", "/v1/sales/{sale}"), ("GET", "/v1/sales/{sale}/orders.csv"),
            ("POST", "/v1/sales/{sale}/orders"), ("GET", "/v1/sales/{sale}/orders"),
            ("GET", "/v1/sales/{sale}/orders/{order}"), ("POST", "/v1/sales/{sale}/orders/{order}/confirm"),
            ("POST", "/v1/sales/{sale}/orders/{order}/cancel")}
    assert seen == want, seen ^ want


def test_an_undescribed_reply_fails():
    """The check itself: a reply outside the description is caught."""
    api = OpenAPI.get()
    api.check("GET", "/v1/sales/x", 200, {"sale": "x", "stock": 1, "sold": 0, "held": 0, "remaining": 1,
                                         "per_user_limit": 0, "hold_seconds": 0, "starts_at": None,
                                         "ends_at": None, "retain_seconds": None, "state": "open"})
    with pytest.raises(AssertionError, match="not what docs/openapi.yaml says"):
        api.check("GET", "/v1/sales/x", 200, {"sale": "x", "stock": 1})
    with pytest.raises(AssertionError, match="not what docs/openapi.yaml says"):
        api.check("POST", "/v1/sales/x/orders", 409, {"error": "no_such_code", "message": "m"})
    with pytest.raises(AssertionError, match="does not describe GET /healthz -> 202"):
        spec_default = api.spec["paths"]["/healthz"]["get"]["responses"].pop("default")
        try:
            api.check("GET", "/healthz", 202, {"status": "ok"})
        finally:
            api.spec["paths"]["/healthz"]["get"]["responses"]["default"] = spec_default
