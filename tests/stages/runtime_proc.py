"""Start the real scoring runtime (``python -m pipeline_plugin.runtime``) as a local process on a
free loopback port, with an entry script written by the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: an entry script that scores rows as sums, declares its output schema with inference-schema
GOOD_SCRIPT = '''
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

def init():
    pass

@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@output_schema(StandardPythonParameterType([0.5]))
def run(data):
    return [float(sum(row)) * {factor} for row in data]
'''

#: same declared schema, but returns a string: breaks the swagger output schema
SCHEMA_BREAKING_SCRIPT = GOOD_SCRIPT.replace("return [float(sum(row)) * {factor} for row in data]", 'return "oops"')

#: run() raises: every request fails with 500
RAISING_SCRIPT = '''
def init():
    pass

def run(data):
    raise ValueError("the model is broken")
'''

#: every third request fails
FLAKY_SCRIPT = '''
import itertools
import json
_n = itertools.count()

def init():
    pass

def run(raw):
    data = json.loads(raw)["data"]
    if next(_n) % 3 == 2:
        raise RuntimeError("flaky")
    return [float(sum(row)) for row in data]
'''

#: slow: 120 ms per request
SLOW_SCRIPT = '''
import json
import time

def init():
    pass

def run(raw):
    time.sleep(0.12)
    return [float(sum(row)) for row in json.loads(raw)["data"]]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def runtime(tmp_path: Path, script: str, keys: str | None = None, timeout: float = 60) -> Iterator[str]:
    """Yield the scoring URI of a running runtime serving ``script``."""
    app = tmp_path / f"app-{free_port()}"
    app.mkdir(parents=True)
    (app / "score.py").write_text(textwrap.dedent(script))
    port = free_port()
    env = dict(os.environ)
    env.update(AZUREML_ENTRY_SCRIPT=str(app / "score.py"), AML_APP_ROOT=str(app), PORT=str(port),
               PIPELINE_PLUGIN_HOST="127.0.0.1", WORKER_COUNT="1")
    env.pop("PIPELINE_PLUGIN_SCORING_KEYS", None)
    if keys:
        env["PIPELINE_PLUGIN_SCORING_KEYS"] = keys
    log = open(app / "runtime.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "pipeline_plugin.runtime", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=app, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"runtime exited with {proc.returncode}: {(app / 'runtime.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"runtime not ready in {timeout}s: {(app / 'runtime.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/score"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
