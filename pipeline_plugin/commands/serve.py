"""`pipeline-plugin serve`: the webhook listener (and its worker) on HOST:PORT."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import ConfigError
from ..settings import default_state_dir
from ..store import add_database_url_flag, use_database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="listen for registry webhooks, store them durably, match trigger rules, start pipelines",
        description="Listen on POST /webhooks/<source> (mlflow, azureml, sagemaker, huggingface, docker-registry, "
        "cloudevents). Each delivery is authenticated with the source's secret ($PIPELINE_PLUGIN_<SOURCE>_SECRET), "
        "stored durably before the 2xx answer, and matched against the trigger rules by a background worker. "
        "Also GET /healthz and GET /metrics (Prometheus).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--state-dir", type=Path, help="where the inbox lives (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    p.add_argument("--triggers", type=Path, help="folder of trigger rule files (default: ./triggers if present)")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept unauthenticated deliveries for sources without a secret (tests only: anyone can start pipelines)",
    )
    p.add_argument("--config", type=Path, help="YAML config: per-source secret_env, auth scheme, tracking_uri")
    p.add_argument("--no-worker", action="store_true", help="only store deliveries; do not match or dispatch")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="worker threads (default 2): pipelines of different models run at once; each model's "
                   "events are processed in order, one at a time")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..rules import load_rules
    from ..server import Listener, load_config, serve

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number; use 1-65535")
    triggers = args.triggers
    if triggers is None and Path("triggers").is_dir():
        triggers = Path("triggers")
    if triggers is not None and not triggers.is_dir():
        raise ConfigError(f"--triggers {str(triggers)!r} is not a folder; point it at the folder of rule files")
    rules = load_rules(triggers) if triggers is not None else []
    if triggers is None:
        logging.getLogger("pipeline_plugin.server").warning("no --triggers folder: events are stored, none match")
    use_database_url(args.database_url)  # history and approvals of the local provider's runs
    config = load_config(args.config)
    listener = Listener(
        args.state_dir or default_state_dir(),
        rules=rules,
        rules_dir=triggers,
        insecure_no_auth=args.insecure_no_auth,
        config=config,
        start_worker=not args.no_worker,
        workers=args.workers,
    )
    serve(listener, args.host, args.port, log_level=args.log_level)
    return 0
