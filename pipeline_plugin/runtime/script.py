"""Loading an Azure ML entry script and calling it the way azureml-inference-server-http 1.5.1 does.

- ``run()`` not decorated: it gets the request body as a ``str`` (the raw JSON text).
- ``@input_schema``: the body is a JSON object; each parameter of run() is taken from the key of
  the same name and converted by inference-schema (numpy, pandas, standard types).
- ``@rawhttp``: run() gets an :class:`AMLRequest`.
- A parameter named ``request_headers`` receives the request headers as a dict.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from . import aml

log = logging.getLogger("pipeline_plugin.runtime")

MODE_JSON = "json"  # undecorated: the body as a JSON string
MODE_SCHEMA = "schema"  # @input_schema: decoded parameters
MODE_RAW = "raw"  # @rawhttp: the request object

#: where the Azure import-path shims live (appended to sys.path *last*: a real install wins)
COMPAT_DIR = Path(__file__).resolve().parent / "compat"


class ScriptError(Exception):
    """The entry script cannot be served (missing init/run, bad signature, import failure)."""


class InputError(Exception):
    """The request does not fit what run() expects (answered with 400 or 415)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class BadInput(InputError):
    """Raised by a script's run() when the input cannot be scored: the client gets 400 with the
    message (any other exception is a 500 whose details stay in the log)."""

    def __init__(self, message: str):
        super().__init__(message, 400)


class RunError(Exception):
    """run() raised; ``__cause__`` holds the script's exception."""


def too_deep(what: str) -> InputError:
    return InputError(f"{what} is nested too deeply to decode as JSON (more than about "
                      f"{sys.getrecursionlimit()} levels of arrays/objects); send flatter input")


_JSON_DIR = os.path.dirname(json.__file__)


def _client_problem(exc: BaseException, mode: str, raw_input: Any) -> InputError | None:
    """An exception from run() that is the client's doing, as a 400 (or the 4xx werkzeug chose):
    the script's ``json.loads`` of the body it was handed failed (not JSON, empty, or nested too
    deeply), or ``request.get_json()`` refused the body. None for anything else (a 500)."""
    if isinstance(exc, json.JSONDecodeError) and mode == MODE_JSON and exc.doc == raw_input:
        if not exc.doc.strip():
            return InputError("POST body is empty. Expecting a JSON document.")
        return InputError(f"POST body could not be decoded as JSON: {exc}")
    if isinstance(exc, RecursionError):
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and os.path.dirname(tb.tb_frame.f_code.co_filename) == _JSON_DIR:
            return too_deep("the request body" if mode != MODE_SCHEMA else "the input")
    if type(exc).__module__ == "werkzeug.exceptions":  # e.g. get_json() on a body that is not JSON
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 500:
            return InputError(str(getattr(exc, "description", "") or exc), code)
    return None


def _is_rawhttp(run: Callable) -> bool:
    if getattr(run, aml.RAWHTTP_ATTR, False) or aml._rawHttpRequested:
        return True
    # scripts importing Azure's own module (a real install) set its flag instead
    for name in ("azureml_inference_server_http.api.aml_request", "azureml.contrib.services.aml_request"):
        module = sys.modules.get(name)
        if module is not None and module is not aml and getattr(module, "_rawHttpRequested", False):
            return True
    return False


def _is_schema_decorated(run: Callable) -> bool:
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:
        return False
    return is_schema_decorated(run)


def _innermost(run: Callable) -> Callable:
    try:
        from inference_schema.schema_util import _get_decorators
    except ImportError:
        return inspect.unwrap(run)
    return _get_decorators(run)[-1]


class UserScript:
    def __init__(self, path: Path, extra_paths: list[Path] = ()):
        self.path = path
        self.extra_paths = list(extra_paths)
        self.module: ModuleType | None = None
        self.init: Callable[[], Any] | None = None
        self.run: Callable[..., Any] | None = None
        self.mode = MODE_JSON
        self.first_param = ""
        self.params: list[inspect.Parameter] = []
        self.wants_headers = False
        self._user_code = None

    def load(self) -> None:
        """Import the script (as Azure does: module ``entry_module``, app root and source dir on sys.path)."""
        for p in self.extra_paths:
            if str(p) not in sys.path:
                sys.path.append(str(p))
        if str(COMPAT_DIR) not in sys.path:
            sys.path.append(str(COMPAT_DIR))
        spec = importlib.util.spec_from_file_location("entry_module", self.path)
        if spec is None or spec.loader is None:
            raise ScriptError(f"{self.path} cannot be imported as a Python module; is it a .py file?")
        module = importlib.util.module_from_spec(spec)
        sys.modules["entry_module"] = module
        spec.loader.exec_module(module)
        for name in ("init", "run"):
            if not callable(getattr(module, name, None)):
                raise ScriptError(f"the entry script {self.path} has no {name}() function; define "
                                  f"init() (called once) and run(input_data) (called per request)")
        self.module = module
        self.init = module.init
        driver = getattr(module, "driver_module", None)  # Azure SDK driver scripts: call the real run()
        self.run = driver.run if isinstance(driver, ModuleType) and hasattr(driver, "run") else module.run
        self._analyze()

    def _analyze(self) -> None:
        params = list(inspect.signature(self.run).parameters.values())
        if any(p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            raise ScriptError("run() cannot accept positional-only arguments, *args, or **kwargs; "
                              "declare run(input_data)")
        self.wants_headers = any(p.name == "request_headers" for p in params)
        params = [p for p in params if p.name != "request_headers"]
        if not params:
            raise ScriptError("run() needs to accept an argument for input data, e.g. run(input_data)")
        self.params = params
        self.first_param = params[0].name
        raw, schema = _is_rawhttp(self.run), _is_schema_decorated(self.run)
        if raw and schema:
            raise ScriptError("run() cannot be decorated with both @rawhttp and @input_schema; keep one")
        if raw:
            self.mode = MODE_RAW
        elif schema:
            self.mode = MODE_SCHEMA
            self._user_code = getattr(_innermost(self.run), "__code__", None)
        log.info("run() takes %s", {MODE_RAW: "the HTTP request (@rawhttp)",
                                     MODE_SCHEMA: "decoded parameters (@input_schema): "
                                                  + ", ".join(p.name for p in params),
                                     MODE_JSON: "the request body as a JSON string"}[self.mode])

    def call_init(self) -> None:
        self.init()

    def extract_parameters(self, body: dict) -> dict[str, Any]:
        """For @input_schema: take each run() parameter from the JSON object (400 if one is missing)."""
        kwargs: dict[str, Any] = {}
        for p in self.params:
            value = body.get(p.name, p.default)
            if value is inspect.Parameter.empty:
                names = ", ".join(repr(q.name) for q in self.params)
                raise InputError(f"A value is not provided for the {p.name!r} parameter; the JSON object "
                                 f"takes the keys {names}")
            kwargs[p.name] = value
        return kwargs

    def invoke(self, kwargs: dict[str, Any], headers: dict[str, str] | None) -> tuple[Any, float]:
        """Call run(); returns (output, elapsed ms). Raises InputError when inference-schema rejected
        the input, RunError when run() itself raised."""
        if self.wants_headers:
            kwargs["request_headers"] = headers or {}
        start = time.perf_counter()
        try:
            out = self.run(**kwargs)
        except InputError:
            raise  # the script said the input is the client's problem (BadInput)
        except Exception as exc:
            problem = _client_problem(exc, self.mode, kwargs.get(self.first_param))
            if problem is not None:
                raise problem from exc
            if self.mode == MODE_SCHEMA:
                problem = self._schema_problem(exc)
                if problem is not None:
                    raise InputError(problem) from exc
            raise RunError(str(exc)) from exc
        return out, (time.perf_counter() - start) * 1000.0

    def _schema_problem(self, exc: BaseException) -> str | None:
        """If ``exc`` was raised by inference-schema while converting the input (before the body of
        run() started), describe it naming the parameter; else None."""
        tb = exc.__traceback__
        param = None
        in_schema = False
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code is self._user_code:
                return None  # raised inside run() itself
            filename = frame.f_code.co_filename
            if f"{os.sep}inference_schema{os.sep}" in filename:
                in_schema = True
                if param is None and frame.f_code.co_name == "_deserialize_input_argument":
                    param = frame.f_locals.get("param_name")
            tb = tb.tb_next
        if not in_schema:
            return None
        where = f"parameter {param!r}" if param else "the input"
        return f"{where} does not match the declared schema: {type(exc).__name__}: {exc}"
