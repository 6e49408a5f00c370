"""Helpers for source tests: load recorded deliveries, build signed requests, fuzz parsers.

Samples are the repository's own copies (``tests/sources/samples/``, byte-identical to the recorded
deliveries, provenance in its README): a fresh clone needs nothing beside it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from pipeline_plugin.errors import PayloadError
from pipeline_plugin.sources import Headers, Request

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"

MLFLOW_SAMPLE_SECRET = "s3cr3t-for-test"


def sample_path(relative: str) -> Path:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.fail(f"sample {relative} is missing from {SAMPLES}")
    return path


def all_samples(folder: str) -> list[str]:
    names = sorted(p.name for p in (SAMPLES / folder).glob("*.json"))
    if not names:
        pytest.fail(f"no samples in {SAMPLES / folder}")
    return [f"{folder}/{n}" for n in names]


def load_sample(relative: str, **overrides: Any) -> Request:
    """A recorded delivery as a ``Request``. Both sample layouts are read: captured ones with
    top-level ``headers``/``raw_body``/``body`` and constructed ones under ``request``."""
    data = json.loads(sample_path(relative).read_text())
    req = data.get("request", data)
    if data.get("raw_body") is not None:
        body = data["raw_body"].encode()
    elif req.get("body") is None:
        body = b""
    else:
        body = json.dumps(req["body"]).encode()
    kwargs: dict[str, Any] = dict(
        method=req.get("method", "POST"),
        path=req.get("path", "/"),
        headers=Headers(req.get("headers") or {}),
        body=body,
    )
    if "headers" in overrides:  # added to (or replacing) the recorded headers
        kwargs["headers"].update(overrides.pop("headers"))
    kwargs.update(overrides)
    return Request(**kwargs)


def make_request(body: bytes | str | Any, headers: dict | None = None, **kw: Any) -> Request:
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    kw.setdefault("method", "POST")
    kw.setdefault("path", "/")
    return Request(headers=Headers(headers or {}), body=body, **kw)


def _mutations(value: Any, rng: random.Random):
    """Yield copies of a JSON document with one value replaced by a wrong type or removed."""
    wrong = [None, 0, -1, 2**70, 1.5, True, "", "x", [], {}, [None], {"a": None}, "\u0000", "\ud800"]
    paths: list[tuple] = []

    def walk(node: Any, path: tuple) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(value, ())
    for path in paths:
        for replacement in wrong + ["__delete__"]:
            doc = json.loads(json.dumps(value))
            if not path:
                if replacement != "__delete__":
                    yield replacement
                continue
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            if replacement == "__delete__":
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            yield doc


def fuzz_parser(parse, request: Request, seed: int = 0, returns: tuple = (list,)) -> int:
    """Feed ``parse`` truncated, byte-flipped and type-mutated versions of ``request``'s body;
    only ``PayloadError`` (with a ``field``) may escape, and the result must be one of ``returns``.
    Returns how many inputs were tried."""
    rng = random.Random(seed)
    body = request.body
    bodies: list[bytes] = [body[:n] for n in range(0, len(body), max(1, len(body) // 40))]
    for _ in range(60):
        b = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        bodies.append(bytes(b))
    bodies += [b"[" * 100_000, b"1" * 5000, b"\xff\xfe", b"null", b"[]", b"{}", b'"x"', b"[{}]", b'{"events": {}}']
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if doc is not None:
        bodies += [json.dumps(m).encode() for m in _mutations(doc, rng)]
    for candidate in bodies:
        mutated = Request(
            method=request.method, path=request.path, headers=request.headers, body=candidate,
            query=request.query, now=request.now, options=request.options,
        )
        try:
            events = parse(mutated)
        except PayloadError as exc:
            assert exc.field, f"PayloadError without a field for body {candidate[:200]!r}"
            continue
        except Exception as exc:  # noqa: BLE001 - the assertion is the point
            raise AssertionError(f"{type(exc).__name__}: {exc} escaped for body {candidate[:300]!r}") from exc
        assert isinstance(events, returns), f"{type(events).__name__} returned for body {candidate[:200]!r}"
    return len(bodies)
