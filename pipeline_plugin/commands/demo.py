"""`pipeline-plugin demo`: one model version registered in MLflow reaches production on this machine.

Starts a real MLflow server and `pipeline-plugin serve` with the repo's trigger rules, creates the
MLflow webhook, trains and registers the example churn model, and follows the version through
package, staging, smoke test and production, ending with the production scoring URI and a curl
line. The deployments keep serving after the demo ends; MLflow and the listener stop unless
--keep-running. Running it again registers the next version, which replaces the one in production.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .. import settings
from ..errors import ConfigError, ServiceError, StageFailed
from ..history import History, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..store import add_database_url_flag, use_database_url

MODEL = "churn"
RULE = "churn-to-production"
WEBHOOK_NAME = "pipeline-plugin-demo"
WEBHOOK_EVENTS = ["model_version.created", "model_version_alias.created", "model_version_tag.set"]
FINAL_RUN_STATUSES = ("succeeded", "failed", "pending-approval", "unknown")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="register the example model in a local MLflow and watch it reach production",
        description="Start MLflow and the listener, register the example churn model, and follow it through "
        "package, staging, smoke test and production. Ends with the production scoring URI and a curl line.",
    )
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR); MLflow's data "
                   "goes under its demo/ folder")
    p.add_argument("--timeout", type=float, default=1200, help="seconds to wait for production (default 1200)")
    p.add_argument("--no-mlflow", action="store_true",
                   help="skip MLflow: send a signed sample MLflow delivery for the example model instead "
                   "(what the demo does when MLflow is not installed)")
    p.add_argument("--keep-running", action="store_true",
                   help="keep MLflow and the listener running after the version reached production (Ctrl-C stops)")
    add_database_url_flag(p, help="the store and inbox the demo's listener and pipeline share (default "
                          "$PIPELINE_PLUGIN_DATABASE_URL, else the state dir's SQLite files): a postgresql:// URL "
                          "keeps the events, deployments and history there")
    add_json_flag(p)
    p.set_defaults(func=run)


def preflight(say: Callable[[str], None]) -> str:
    """The target the demo deploys to, after checking what it needs."""
    from ..stages.promote import docker_answers

    if docker_answers():
        import docker

        client = docker.from_env()
        try:
            client.images.get(settings.default_base_image())
        except Exception:  # noqa: BLE001 - missing image or any lookup failure
            raise ConfigError(
                f"the base image {settings.default_base_image()} is missing; build it once with "
                "`bash scripts/services.sh base-image` (or run `make demo`, which sets everything up)"
            ) from None
        finally:
            client.close()
        say(f"Docker Engine answers; model images build FROM {settings.default_base_image()}")
        return "docker"
    say("no Docker Engine answers: deploying as local processes (target process)")
    return "process"


def follow(state_dir: Path, service: str, version: str, timeout: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Print each stage of ``version`` as the worker records it; return when its run is final.
    Reads the inbox the demo's `serve` uses: the shared one of $PIPELINE_PLUGIN_DATABASE_URL when that
    is a postgresql:// URL, else the state dir's."""
    from ..inbox.select import open_inbox

    inbox = open_inbox(state_dir)
    history = History(state_dir)
    deadline = time.monotonic() + timeout
    seen_event = None
    seen_records: set[int] = set()
    run_status = None
    while time.monotonic() < deadline:
        if seen_event is None:
            for stored in inbox.list():
                e = stored.event
                if e.source == "mlflow" and e.model == MODEL and e.version == version and e.kind == "model_version.created":
                    seen_event = stored.id
                    say(f"webhook delivered: event {stored.id} ({e.kind} {e.model} v{e.version}) stored in the inbox")
                    break
        for rec in reversed(history.records(service=service)):
            if rec.id in seen_records or rec.version != version:
                continue
            seen_records.add(rec.id)
            what = {"fetch": "fetch the version's files", "package": "package", "deploy": f"deploy {rec.env}",
                    "smoke-test": f"smoke test {rec.env}", "promote": f"promote to {rec.env}",
                    "rollback": f"rollback {rec.env}", "writeback": "write-back to MLflow",
                    "approval": "approval"}.get(rec.action, rec.action)
            detail = rec.reason if rec.status != "succeeded" or rec.action in ("promote", "writeback") else (
                rec.image_id or rec.scoring_uri or "")
            say(f"{what}: {rec.status}" + (f" ({detail})" if detail else ""))
        if seen_event is not None:
            stored = inbox.get(seen_event)
            if stored.status == "unmatched":
                raise StageFailed(f"event {seen_event} matched no rule: {stored.reason}; is triggers/ the repo's folder?")
            runs = [r for r in stored.runs if r.status in FINAL_RUN_STATUSES]
            if runs:
                run_status = runs[0]
                break
        time.sleep(0.5)
    if run_status is None:
        raise StageFailed(f"{MODEL} v{version} did not finish within {timeout:.0f}s; see the listener's log")
    return {"event_id": seen_event, "run_id": run_status.run_id, "status": run_status.status,
            "detail": getattr(run_status, "detail", "")}


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)  # the listener child, the history and follow() all use it
    from .. import demo_services
    from ..stages.promote import resolve_target
    from ..targets import get_target

    say = Progress(enabled=True)
    state_dir = settings.default_state_dir()
    work = state_dir / "demo"
    triggers = settings.data_dir("triggers")
    example = settings.data_dir("examples") / "churn"
    if not (triggers / "churn-to-production.yml").exists() or not (example / "train.py").exists():
        raise ConfigError(f"the demo needs {triggers}/churn-to-production.yml and {example}/train.py; "
                          "run it from the source checkout or a complete install")
    use_mlflow = not args.no_mlflow
    if use_mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            say("MLflow is not installed (pip install 'pipeline-plugin[mlflow-server]'): sending a signed sample delivery instead")
            use_mlflow = False

    say("1/6 checking this machine")
    target = preflight(say)
    if not use_mlflow:
        return run_without_mlflow(args, state_dir, work, triggers, example, say)
    say(f"2/6 starting MLflow (data in {work / 'mlflow'})")
    with demo_services.mlflow_server(work / "mlflow") as mlflow_srv:
        say(f"    MLflow answers at {mlflow_srv.url}")
        secret = secrets.token_urlsafe(24)
        config = work / "listener.yml"
        config.write_text(f"sources:\n  mlflow:\n    tracking_uri: {mlflow_srv.url}\n")
        say(f"3/6 starting the listener: pipeline-plugin serve --triggers {triggers}")
        with demo_services.serve(state_dir, triggers, config, {"PIPELINE_PLUGIN_MLFLOW_SECRET": secret}, work) as srv:
            say(f"    listening at {srv.url} (log: {srv.log_path})")
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=mlflow_srv.url, registry_uri=mlflow_srv.url)
            for hook in client.list_webhooks():
                if hook.name == WEBHOOK_NAME:
                    client.delete_webhook(hook.webhook_id)  # left by an earlier demo, pointing at an old port
            client.create_webhook(name=WEBHOOK_NAME, url=f"{srv.url}/webhooks/mlflow", events=WEBHOOK_EVENTS, secret=secret)
            say(f"4/6 MLflow webhook '{WEBHOOK_NAME}' -> {srv.url}/webhooks/mlflow (signed with a fresh secret)")

            say(f"5/6 training the example model and registering it in MLflow as '{MODEL}'")
            env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_srv.url}
            started = time.monotonic()
            train = subprocess.run([sys.executable, str(example / "train.py"), "--out", str(work / "train"),
                                    "--register", MODEL], cwd=work, env=env, capture_output=True, text=True)
            if train.returncode != 0:
                raise ServiceError(f"training failed (exit {train.returncode}): {train.stderr[-2000:]}")
            version = max((mv.version for mv in client.search_model_versions(f"name='{MODEL}'")), key=int)
            say(f"    registered {MODEL} version {version}")

            say(f"6/6 following {MODEL} v{version} through package, staging, smoke test and production")
            outcome = follow(state_dir, "churn", version, args.timeout, say)
            elapsed = round(time.monotonic() - started, 1)
            history = History(state_dir)
            target = resolve_target("churn", "production", history, None)
            prod = get_target(target).get("churn", "production")
            sample = example / "sample.json"
            result = {
                "model": MODEL, "version": version, "status": outcome["status"], "detail": outcome["detail"],
                "run_id": outcome["run_id"], "seconds": elapsed, "target": target,
                "production": prod.to_dict() if prod else None, "mlflow": mlflow_srv.url, "listener": srv.url,
            }
            if outcome["status"] != "succeeded" or prod is None or prod.version != version:
                emit(args, result, f"\n{MODEL} v{version} did not reach production: {outcome['detail']}\n"
                     f"see `pipeline-plugin status --name churn` and {srv.log_path}")
                return 1
            aliases = client.get_registered_model(MODEL).aliases
            result["aliases"] = dict(aliases)
            curl = (f"curl -s -X POST {prod.scoring_uri} -H 'Content-Type: application/json' "
                    f"-d @{sample}")
            result["curl"] = curl
            human = "\n".join([
                "",
                f"{MODEL} v{version} is in production ({elapsed}s from registration), image {prod.image_id}",
                f"MLflow alias 'production' -> v{aliases.get('production', '?')}",
                f"production scoring URI: {prod.scoring_uri}",
                f"swagger: {prod.swagger_uri}",
                "try it:",
                f"  {curl}",
                "see what runs where and why:",
                "  pipeline-plugin status --name churn",
            ])
            emit(args, result, human)
            if args.keep_running:
                say(f"MLflow ({mlflow_srv.url}) and the listener ({srv.url}) keep running; Ctrl-C stops them")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
            return 0


def signed_delivery(url: str, secret: str, model: str, version: str, source: str) -> None:
    """POST an MLflow ``model_version.created`` delivery, signed as MLflow signs it."""
    import urllib.request
    import uuid

    from ..sources.auth import MLFLOW_DELIVERY_ID, MLFLOW_SIGNATURE, MLFLOW_TIMESTAMP, sign

    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                       "data": {"name": model, "version": version, "source": source, "run_id": None, "tags": {},
                                "description": "pipeline-plugin demo sample delivery"}}).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", MLFLOW_DELIVERY_ID: delivery, MLFLOW_TIMESTAMP: stamp,
        MLFLOW_SIGNATURE: sign(secret.encode(), delivery, stamp, body)})
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status >= 300:
            raise ServiceError(f"the listener answered HTTP {resp.status} to the sample delivery")


def run_without_mlflow(args: argparse.Namespace, state_dir: Path, work: Path, triggers: Path, example: Path,
                       say: Callable[[str], None]) -> int:
    """The same chain without an MLflow server: a signed MLflow delivery announces the example model
    (its files in a local folder), `serve` matches and the local provider deploys it."""
    import shutil

    from .. import demo_services
    from ..stages.promote import resolve_target
    from ..targets import get_target

    history = History(state_dir)
    versions = [int(r.version) for r in history.records(service="churn") if r.version and r.version.isdigit()]
    version = str(max(versions, default=0) + 1)
    model = work / "sample-registry" / MODEL / version / "model"
    if model.exists():
        shutil.rmtree(model)
    model.mkdir(parents=True)
    shutil.copy2(example / "model.pkl", model / "model.pkl")
    say(f"2/6 no MLflow: the example model's files for v{version} are in {model}")
    config = work / "listener-no-mlflow.yml"
    # the delivery names a local folder: the listener reads local paths only below the roots it allows
    config.write_text(f"sources:\n  mlflow: {{}}\nfetch:\n  allowed_roots: [{json.dumps(str(work / 'sample-registry'))}]\n")
    secret = secrets.token_urlsafe(24)
    say(f"3/6 starting the listener: pipeline-plugin serve --triggers {triggers}")
    with demo_services.serve(state_dir, triggers, config, {"PIPELINE_PLUGIN_MLFLOW_SECRET": secret}, work) as srv:
        say(f"    listening at {srv.url} (log: {srv.log_path})")
        say("4/6 signing an MLflow model_version.created delivery with a fresh secret")
        started = time.monotonic()
        signed_delivery(f"{srv.url}/webhooks/mlflow", secret, MODEL, version, model.as_uri())
        say(f"5/6 delivered {MODEL} v{version} to {srv.url}/webhooks/mlflow")
        say(f"6/6 following {MODEL} v{version} through package, staging, smoke test and production")
        outcome = follow(state_dir, "churn", version, args.timeout, say)
    elapsed = round(time.monotonic() - started, 1)
    target = resolve_target("churn", "production", History(state_dir), None)
    prod = get_target(target).get("churn", "production")
    result = {"model": MODEL, "version": version, "status": outcome["status"], "detail": outcome["detail"],
              "run_id": outcome["run_id"], "seconds": elapsed, "target": target, "mlflow": None,
              "production": prod.to_dict() if prod else None}
    if outcome["status"] != "succeeded" or prod is None or prod.version != version:
        emit(args, result, f"\n{MODEL} v{version} did not reach production: {outcome['detail']}")
        return 1
    curl = f"curl -s -X POST {prod.scoring_uri} -H 'Content-Type: application/json' -d @{example / 'sample.json'}"
    result["curl"] = curl
    emit(args, result, "\n".join(["", f"{MODEL} v{version} is in production ({elapsed}s from the delivery), image {prod.image_id}",
                                   f"production scoring URI: {prod.scoring_uri}", "try it:", f"  {curl}",
                                   "see what runs where and why:", "  pipeline-plugin status --name churn"]))
    return 0
