"""Run a `.gitlab-ci.yml` under gitlab-ci-local (https://github.com/firecow/gitlab-ci-local), a real
third-party GitLab runner emulation, with its shell executor.

`scripts/setup.sh` installs it into `.tools/` (npm, pinned); this module finds it there (or through
`GITLAB_CI_LOCAL`), makes a throw-away git project with a remote, writes the pipeline and the files
its jobs read, runs it with a timeout, and returns each job's status and log.

Each job runs in its own copy of the project (`--shell-isolation`), as on a runner: only what the
pipeline declares as artifacts (here the dotenv reports) travels between jobs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION = "4.64.0"
INSTALL = f"bash scripts/setup.sh  (or: npm install --prefix .tools gitlab-ci-local@{VERSION}; apt-get install rsync)"
SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
#: where gitlab-ci-local keeps its builds, artifacts and logs, inside the project
STATE = ".gitlab-ci-local"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: the report gitlab-ci-local prints at the end: " PASS  job", " FAIL  job", " WARN  job  pre_script"
_REPORT = re.compile(r"^ (PASS|FAIL|WARN) +(?:\[[^\]]*\] )?(\S+)\s*(pre_script|after_script)?\s*$")


class MissingTool(RuntimeError):
    """gitlab-ci-local, node or rsync is not installed; the message names the command that installs it."""


def executable() -> Path:
    """The pinned gitlab-ci-local, with node and rsync beside it, or MissingTool."""
    exe = Path(os.environ.get("GITLAB_CI_LOCAL") or ROOT / ".tools" / "node_modules" / ".bin" / "gitlab-ci-local")
    for tool in ("node", "rsync", "git"):
        if shutil.which(tool) is None:
            raise MissingTool(f"{tool} is not installed; run {INSTALL}")
    if not exe.is_file():
        raise MissingTool(f"gitlab-ci-local is not installed at {exe}; run {INSTALL}")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if version != VERSION:
        raise MissingTool(f"{exe} is gitlab-ci-local {version or '?'}, the tests need {VERSION}; run {INSTALL}")
    return exe


@dataclass
class Job:
    name: str
    #: "success", "failed", "warning" (failed with allow_failure) or "skipped" (never started)
    status: str
    log: str = ""


@dataclass
class Pipeline:
    returncode: int
    output: str
    project: Path
    jobs: dict[str, Job] = field(default_factory=dict)

    def status(self) -> dict[str, str]:
        return {name: job.status for name, job in self.jobs.items()}

    def dotenv(self, job: str) -> dict[str, str]:
        """The variables a job's dotenv report handed on (`artifacts:reports:dotenv`)."""
        out: dict[str, str] = {}
        folder = self.project / STATE / "artifacts" / job / ".gitlab-ci-reports" / "dotenv"
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            for line in path.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    out[key.strip()] = value
        return out

    def explain(self) -> str:
        """Every job's status and log, for an assertion message."""
        parts = [f"gitlab-ci-local exit {self.returncode}; jobs: {self.status()}"]
        for job in self.jobs.values():
            if job.log:
                parts.append(f"----- {job.name} ({job.status}) -----\n{job.log[-6000:]}")
        if not any(job.log for job in self.jobs.values()):
            parts.append(self.output[-6000:])
        return "\n".join(parts)


def _git(project: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.invalid",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.invalid"}
    subprocess.run(["git", *args], cwd=project, env=env, check=True, capture_output=True, text=True)


def make_project(project: Path, files: dict[str, str | bytes | Path], remote_url: str = "https://gitlab.example.com/acme/models.git") -> Path:
    """A git project holding ``files`` (path -> text, bytes or a file to copy), committed on `main`
    and pushed to a bare repository that is its `origin` (gitlab-ci-local wants a remote). Its
    `gcl-origin` remote only gives gitlab-ci-local a GitLab-shaped URL for CI_PROJECT_PATH and friends."""
    project.mkdir(parents=True, exist_ok=True)
    for rel, content in {".gitignore": f"/{STATE}/\n", **files}.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    bare = project.with_name(project.name + "-origin.git")
    _git(project.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "pipeline under test")
    _git(project, "remote", "add", "origin", str(bare))
    _git(project, "remote", "add", "gcl-origin", remote_url)
    _git(project, "push", "-q", "origin", "main")
    _git(project, "remote", "set-head", "origin", "main")
    return project


def commit(project: Path, files: dict[str, str | bytes], message: str = "update") -> None:
    """Change files in the project and commit them (a later pipeline runs on that commit)."""
    for rel, content in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", message)
    _git(project, "push", "-q", "origin", "main")


def job_names(project: Path, exe: Path | None = None) -> list[str]:
    exe = exe or executable()
    proc = subprocess.run([str(exe), "--list-json"], cwd=project, capture_output=True, text=True, timeout=120,
                          env=_env(project, None))
    if proc.returncode != 0:
        raise AssertionError(f"gitlab-ci-local --list-json failed:\n{proc.stdout}\n{proc.stderr}")
    return [job["name"] for job in json.loads(proc.stdout)]


def _env(project: Path, extra: dict[str, str] | None) -> dict[str, str]:
    """A runner's environment: the system PATH (not the test's venv), the runner user's HOME (its pip
    cache), and what the test passes (Docker's address, pip's settings)."""
    env = {
        "PATH": ":".join(SYSTEM_PATH),
        "HOME": os.environ.get("HOME") or str(project.parent / "runner-home"),
        "LANG": "C.UTF-8",
        "FORCE_COLOR": "0",
    }
    for key in ("DOCKER_HOST", "DOCKER_CONFIG", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT",
                "PIP_CONSTRAINT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_CACHE_DIR",
                "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if key in os.environ:
            env[key] = os.environ[key]
    Path(env["HOME"]).mkdir(exist_ok=True)
    env.update(extra or {})
    return env


def run(project: Path, variables: dict[str, str] | None = None, jobs: list[str] | None = None, timeout: float = 1500,
        env: dict[str, str] | None = None, manual: list[str] | None = None) -> Pipeline:
    """Run the project's pipeline (or ``jobs`` with the jobs they need) with the shell executor.

    ``variables`` are passed as `--variable K=V`: like a pipeline's trigger variables they win over the
    file's own, and gitlab-ci-local expands `$CI_...` references in them per job."""
    exe = executable()
    names = job_names(project, exe)
    shutil.rmtree(project / STATE / "output", ignore_errors=True)  # no log of an earlier run passes for this one
    cmd = [str(exe), "--force-shell-executor", "--shell-isolation", "--no-color",
           "--home", str(project.parent / "gcl-home"), "--max-job-name-padding", "0", "--concurrency", "1"]
    # gitlab-ci-local 4.64 gives a job with an `image:` CI_PROJECT_DIR=/builds/GROUP/PROJECT even when
    # --force-shell-executor runs it in its build folder; a GitLab shell runner names that folder
    builds = f"{project}/{STATE}/builds"
    variables = {"CI_BUILDS_DIR": f"{builds}/$CI_JOB_NAME", "CI_PROJECT_DIR": f"{builds}/$CI_JOB_NAME", **(variables or {})}
    for key, value in variables.items():
        cmd += ["--variable", f"{key}={value}"]
    for name in manual or []:
        cmd += ["--manual", name]
    if jobs:
        cmd += ["--needs", *jobs]
    try:
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=timeout, env=_env(project, env),
                              start_new_session=True)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise AssertionError(f"gitlab-ci-local did not finish within {timeout:.0f}s:\n{out[-8000:]}") from None
    output = _ANSI.sub("", output)
    reported = {}
    for line in output.splitlines():
        m = _REPORT.match(line)
        if m and m.group(3) != "after_script":  # a failed after_script leaves the job's status alone
            reported[m.group(2)] = {"PASS": "success", "FAIL": "failed", "WARN": "warning"}[m.group(1)]
    result = Pipeline(returncode=returncode, output=output, project=project)
    for name in names:
        log_file = project / STATE / "output" / f"{_safe(name)}.log"
        log = _ANSI.sub("", log_file.read_text(errors="replace")) if log_file.is_file() else ""
        result.jobs[name] = Job(name, reported.get(name, "skipped"), log)
    return result


def _safe(name: str) -> str:
    """gitlab-ci-local's Utils.safeDockerString: runs of other characters base64url-encoded."""
    return re.sub(r"[^\w-]+", lambda m: base64.urlsafe_b64encode(m.group(0).encode()).decode().rstrip("="), name)
