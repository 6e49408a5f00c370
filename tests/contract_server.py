"""A local HTTP server that stands in for GitHub, GitLab and Azure DevOps in provider tests.

Every request the real SDKs send is checked against the official API descriptions copied into
``tests/providers/contracts/`` (see that folder's README): the path and method must exist, required
path/query parameters must be present (and integers where the description says so), and a JSON body
is validated with ``jsonschema`` against the operation's schema, with ``$ref`` resolved inside the
description file. A request that matches no operation, or breaks the description, is recorded as a
violation and answered 400; ``ContractServer.assert_clean()`` (called by the fixtures) fails the
test on any violation. Answers are scripted per operation id, including failures (401, 404, 422,
429 with Retry-After, 500) and slow answers for client timeouts.

Quirks of the descriptions handled here, as the contracts README lists them:
- GitLab writes ``/projects/{id}/(ref/{ref}/)trigger/pipeline`` as one key: the ``(ref/{ref}/)`` part
  is optional, and ``ref`` is then not required in the path.
- GitLab puts ``example`` on path parameters: ignored (it is not a validation keyword).
- Azure's ``x-ms-paths`` keys end in ``?``: the part from ``?`` on is dropped.
- Azure's descriptions require an ``api-version`` query parameter; the azure-devops SDK sends it in
  the ``Accept`` header (``application/json;api-version=7.1``), which the service accepts too.
- The azure-devops SDK discovers routes with ``OPTIONS {org}/_apis`` and
  ``GET {org}/_apis/ResourceAreas`` before calling an API. Those are not in the trimmed
  descriptions; they are served only when a test registers them with :meth:`ContractServer.extra`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import referencing
import referencing.jsonschema

CONTRACTS = Path(__file__).parent / "providers" / "contracts"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (client timeouts)


@dataclass
class Request:
    operation: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    params: dict[str, str]  # path parameters, URL-decoded

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """One API description file (OpenAPI 3 or Swagger 2), mounted at ``prefix``."""

    def __init__(self, file: str | Path, prefix: str = "") -> None:
        self.file = Path(file) if Path(file).is_absolute() else CONTRACTS / file
        self.doc = json.loads(self.file.read_text())
        self.oas3 = "openapi" in self.doc
        base = "" if self.oas3 else (self.doc.get("basePath") or "").rstrip("/")
        self.uri = f"urn:contract:{self.file.name}"
        spec = referencing.jsonschema.DRAFT7 if self.oas3 else referencing.jsonschema.DRAFT4
        self.registry = referencing.Registry().with_resource(self.uri, spec.create_resource(self.doc))
        self.validator_cls = jsonschema.Draft7Validator if self.oas3 else jsonschema.Draft4Validator
        self.routes: list[tuple[re.Pattern[str], str, str, str, dict, list[dict]]] = []
        for section in ("paths", "x-ms-paths"):
            for key, item in (self.doc.get(section) or {}).items():
                template = key.split("?", 1)[0]
                regex = self._regex(prefix + base + template)
                shared = [self._deref(p) for p in item.get("parameters", [])]
                for method, op in item.items():
                    if method in METHODS:
                        self.routes.append((regex, section, key, method, op, shared))

    @staticmethod
    def _regex(template: str) -> re.Pattern[str]:
        out, pos = "", 0
        for m in re.finditer(r"\((ref/\{ref\}/)\)|\{([^}]+)\}", template):
            out += re.escape(template[pos : m.start()])
            if m.group(1):  # GitLab's optional `(ref/{ref}/)` segment
                out += r"(?:ref/(?P<ref>[^/]+)/)?"
            else:
                name = m.group(2)
                out += f"(?P<{re.sub(r'[^A-Za-z0-9_]', '_', name)}>[^/]+)"
            pos = m.end()
        out += re.escape(template[pos:])
        return re.compile(f"^{out}/?$")

    def _deref(self, node: dict) -> dict:
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def match(self, method: str, path: str):
        for regex, section, key, op_method, op, shared in self.routes:
            if op_method != method.lower():
                continue
            m = regex.match(path)
            if m:
                return m, section, key, op, shared
        return None

    def check(self, method: str, path: str, query: dict, headers: dict, raw_body: bytes, found) -> tuple[str, dict, Any, list[str]]:
        m, section, key, op, shared = found
        problems: list[str] = []
        op_id = op.get("operationId") or f"{method} {key}"
        params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
        declared = {(p["in"], p["name"]): p for p in shared}
        declared.update({(p["in"], p["name"]): p for p in (self._deref(x) for x in op.get("parameters", []))})
        lower_headers = {k.lower(): v for k, v in headers.items()}
        body_schema_ptr = None
        for (where, name), p in declared.items():
            if where == "path":
                value = params.get(re.sub(r"[^A-Za-z0-9_]", "_", name))
                if value is None:
                    if not (name == "ref" and "(ref/{ref}/)" in key):
                        problems.append(f"{op_id}: path parameter {name!r} missing")
                    continue
                if (p.get("type") or p.get("schema", {}).get("type")) == "integer" and not value.isdigit():
                    problems.append(f"{op_id}: path parameter {name!r}={value!r} is not an integer")
            elif where == "query":
                if name in query:
                    typ = p.get("type") or p.get("schema", {}).get("type")
                    if typ == "integer" and not all(v.lstrip("-").isdigit() for v in query[name]):
                        problems.append(f"{op_id}: query parameter {name!r}={query[name]!r} is not an integer")
                elif p.get("required"):
                    accept = lower_headers.get("accept", "")
                    if not (name == "api-version" and "api-version=" in accept):
                        problems.append(f"{op_id}: required query parameter {name!r} missing")
            elif where == "header":
                if p.get("required") and name.lower() not in lower_headers:
                    problems.append(f"{op_id}: required header {name!r} missing")
            elif where == "body":
                body_schema_ptr = ("body", p.get("required", False), p["schema"])
        if self.oas3 and "requestBody" in op:
            rb = self._deref(op["requestBody"])
            if "application/json" in rb.get("content", {}):
                body_schema_ptr = ("oas3", rb.get("required", False), rb["content"]["application/json"]["schema"])
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                problems.append(f"{op_id}: request body is not JSON: {raw_body[:200]!r}")
                body = raw_body
        if body_schema_ptr is not None:
            _, required, schema = body_schema_ptr
            if body is None:
                if required:
                    problems.append(f"{op_id}: request body is required")
            elif not isinstance(body, bytes):
                validator = self.validator_cls(self._anchor(schema, section, key, method.lower(), op), registry=self.registry)
                for error in validator.iter_errors(body):
                    where = "/".join(str(x) for x in error.absolute_path) or "(root)"
                    problems.append(f"{op_id}: request body at {where}: {error.message}")
        elif body is not None and method.upper() in ("GET", "HEAD", "DELETE"):
            problems.append(f"{op_id}: {method} sends a body the description does not define")
        return op_id, params, body, problems

    def _anchor(self, schema: dict, section: str, key: str, method: str, op: dict) -> dict:
        """A schema whose $refs resolve inside the description file."""
        if "$ref" in schema:
            return {"$ref": self.uri + schema["$ref"]}
        if self.oas3:
            ptr = _pointer(section, key, method, "requestBody", "content", "application/json", "schema")
        else:
            index = next(i for i, p in enumerate(op["parameters"]) if self._deref(p).get("in") == "body")
            ptr = _pointer(section, key, method, "parameters", str(index), "schema")
        return {"$ref": f"{self.uri}#/{ptr}"}


Handler = Callable[[Request], Reply]


class ContractServer:
    """``with ContractServer([Contract("github.json")]) as server:`` then ``server.url``."""

    def __init__(self, contracts: list[Contract], auth: Callable[[Request], bool] | None = None,
                 unauthorized: Reply | None = None) -> None:
        self.contracts = contracts
        self.auth = auth
        self.unauthorized = unauthorized or Reply(401, {"message": "Bad credentials"})
        self.handlers: dict[str, Handler] = {}
        self.scripted: dict[str, deque[Reply]] = defaultdict(deque)
        self.extras: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # ---- scripting ------------------------------------------------------------------------------
    def on(self, operation: str, handler: Handler | Reply) -> None:
        """Answer ``operation`` (an operationId) with ``handler`` every time."""
        self.handlers[operation] = handler if callable(handler) else (lambda req, r=handler: r)

    def then(self, operation: str, *replies: Reply) -> None:
        """Answer the next calls of ``operation`` with ``replies`` (in order), then the handler."""
        self.scripted[operation].extend(replies)

    def extra(self, method: str, path_regex: str, handler: Handler | Reply) -> None:
        """Serve a route that is not in the descriptions (SDK discovery only)."""
        h = handler if callable(handler) else (lambda req, r=handler: r)
        self.extras.append((method.upper(), re.compile(path_regex), h))

    def calls(self, operation: str) -> list[Request]:
        return [r for r in self.requests if r.operation == operation]

    def assert_clean(self) -> None:
        assert not self.violations, "requests broke the API description:\n" + "\n".join(self.violations)

    # ---- serving --------------------------------------------------------------------------------
    def _handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Reply:
        split = urlsplit(raw_path)
        query = parse_qs(split.query, keep_blank_values=True)
        for m, regex, handler in self.extras:
            if m == method and regex.match(split.path):
                try:
                    body = json.loads(raw_body) if raw_body else None
                except ValueError:  # not JSON (a file, protobuf): the handler gets the bytes
                    body = raw_body
                req = Request(f"extra {method} {split.path}", method, split.path, query, headers, body, {})
                with self._lock:
                    self.requests.append(req)
                return handler(req)
        for contract in self.contracts:
            found = contract.match(method, split.path)
            if found is None:
                continue
            try:
                op_id, params, body, problems = contract.check(method, split.path, query, headers, raw_body, found)
            except Exception as exc:  # noqa: BLE001 - a broken check must fail the test, not hang it
                with self._lock:
                    self.violations.append(f"contract check crashed on {method} {raw_path}: {exc!r}"[:2000])
                return Reply(500, {"message": "contract check crashed"})
            req = Request(op_id, method, split.path, query, headers, body, params)
            with self._lock:
                self.requests.append(req)
                self.violations.extend(problems)
            if problems:
                return Reply(400, {"message": "; ".join(problems)})
            if self.auth is not None and not self.auth(req):
                return self.unauthorized
            with self._lock:
                queued = self.scripted[op_id].popleft() if self.scripted[op_id] else None
            if queued is not None:
                return queued
            if op_id in self.handlers:
                return self.handlers[op_id](req)
            with self._lock:
                self.violations.append(f"{op_id}: no answer scripted for {method} {raw_path}")
            return Reply(501, {"message": f"test did not script {op_id}"})
        with self._lock:
            self.violations.append(f"unexpected request: {method} {raw_path} (no operation in the descriptions)")
        return Reply(404, {"message": "Not Found"})

    def __enter__(self) -> "ContractServer":
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # answers in one write, no 40 ms delayed-ACK stalls

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                reply = server._handle(self.command, self.path, dict(self.headers.items()), raw)
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, (dict, list)):
                    payload = json.dumps(reply.body).encode()
                    ctype = "application/json; charset=utf-8"
                elif isinstance(reply.body, str):
                    payload, ctype = reply.body.encode(), "text/plain; charset=utf-8"
                else:
                    payload, ctype = reply.body or b"", "application/json; charset=utf-8"
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": ctype, **reply.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
