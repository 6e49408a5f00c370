"""deploy/systemd/pipeline-plugin-listener.service: systemd itself finds nothing wrong with it
(`systemd-analyze verify`, with ExecStart pointing at this venv's pipeline-plugin), its command
line parses as real `serve` flags, and the directives users rely on are there: a non-root User,
Restart=on-failure (not on a config error, exit 2), and a stop bounded by TimeoutStopSec that
covers the listener's own bounded shutdown from the example env file."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_plugin import cli
from pipeline_plugin.commands.serve import SHUTDOWN_TIMEOUT_ENV

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNIT = FOLDER / "pipeline-plugin-listener.service"
ENV_EXAMPLE = FOLDER / "listener.env.example"
INSTALLED_BIN = "/opt/pipeline-plugin/bin/pipeline-plugin"
ENV_FILE = "/etc/pipeline-plugin/listener.env"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing; install it with `apt-get install systemd` (scripts/setup.sh does)")
    path = tmp_path / UNIT.name
    path.write_text(text)
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_systemd_verifies_the_unit_without_a_warning(tmp_path):
    here = Path(sys.executable).with_name("pipeline-plugin")
    assert here.exists()
    text = UNIT.read_text().replace(INSTALLED_BIN, str(here)).replace(ENV_FILE, str(ENV_EXAMPLE))
    out = verify(text, tmp_path)
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), out.stderr + out.stdout
    # and verify does catch what the test relies on it for: a misspelt key, a command that is not there
    out = verify(text.replace("Restart=on-failure", "Restrat=on-failure"), tmp_path)
    assert "Unknown key" in out.stderr
    out = verify(text.replace(str(here), "/nonexistent/pipeline-plugin"), tmp_path)
    assert out.returncode != 0 and "not executable" in out.stderr


def test_the_unit_runs_serve_as_a_non_root_user_restarts_on_failure_and_stops_in_bounded_time():
    service = unit()["Service"]
    assert service["User"] and service["User"] != "root" and service["Group"] != "root"
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert service["EnvironmentFile"] == ENV_FILE and service["KillSignal"] == "SIGTERM"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED_BIN
    args = cli.build_parser().parse_args(argv[1:])
    assert args.func.__module__ == "pipeline_plugin.commands.serve"
    assert args.tls_cert and args.tls_key and str(args.state_dir) == "/var/lib/pipeline-plugin"
    assert service["WorkingDirectory"] == "/var/lib/pipeline-plugin" and service["StateDirectory"] == "pipeline-plugin"
    # port 443 as non-root needs the capability, and only it
    assert args.port >= 1024 or service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    # bounded: open requests get the shutdown timeout, the worker the same again; systemd waits longer
    stop_s = int(service["TimeoutStopSec"])
    shutdown_s = int(env_example()[SHUTDOWN_TIMEOUT_ENV]) / 1000
    assert 2 * shutdown_s < stop_s <= 120
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_example_env_file_names_variables_the_listener_reads():
    from pipeline_plugin import sources
    from pipeline_plugin.store.engine import DATABASE_URL_ENV

    env = env_example()
    known = {DATABASE_URL_ENV, SHUTDOWN_TIMEOUT_ENV} | {sources.secret_env_var(n) for n in sources.BACKENDS}
    assert set(env) <= known and DATABASE_URL_ENV in env
    assert env[DATABASE_URL_ENV].startswith("postgresql://")
