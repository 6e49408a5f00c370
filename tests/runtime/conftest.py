"""Runs the scoring runtime as a real subprocess on a free port, with the scripts under scripts/."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import unused_port

SCRIPTS = Path(__file__).resolve().parent / "scripts"
REPO = Path(__file__).resolve().parents[2]


class Runtime:
    """One ``python -m pipeline_plugin.runtime`` process; ``stop()`` sends SIGTERM and returns the exit code."""

    def __init__(self, script: str, env: dict | None = None, workers: int = 1, cwd: Path | None = None,
                 python: str = sys.executable, args: list[str] | None = None,
                 module: str = "pipeline_plugin.runtime"):
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pp-runtime-{self.port}-{os.getpid()}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AZUREML_", "PIPELINE_PLUGIN_", "AML_"))}
        full_env.update({"PORT": str(self.port), "WORKER_COUNT": str(workers),
                         "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / script) if script else "",
                         "PIPELINE_PLUGIN_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        args = [a.replace("{port}", str(self.port)) for a in args or []]
        self.proc = subprocess.Popen([python, "-m", module, *args], env=full_env,
                                     cwd=cwd or REPO, stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        # ours answers GET /livez while init() runs; Azure's server has only GET / (once init() is done)
        self.live_path = "/livez" if module == "pipeline_plugin.runtime" else "/"

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.client.get(self.live_path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime did not listen within {timeout}s:\n{self.logs()}")

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get("/readyz").status_code == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited with {self.proc.returncode}:\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready within {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture
def runtime():
    """``runtime(script, env=..., workers=..., ready=True)`` starts a runtime; all are stopped at teardown."""
    started: list[Runtime] = []

    def start(script: str, env: dict | None = None, workers: int = 1, ready: bool = True, **kw) -> Runtime:
        rt = Runtime(script, env, workers, **kw)
        started.append(rt)
        if ready:
            rt.wait_ready()
        return rt

    yield start
    for rt in started:
        rt.cleanup()


def make_sklearn_model(model_dir: Path) -> Path:
    """A small LogisticRegression pickled as model.pkl (4 features, 3 classes)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    X = rng.normal(size=(150, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.pkl").write_bytes(pickle.dumps(model))
    return model_dir


@pytest.fixture(scope="session")
def sklearn_model_dir(tmp_path_factory) -> Path:
    return make_sklearn_model(tmp_path_factory.mktemp("sklearn-model"))
