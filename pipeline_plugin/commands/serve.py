"""`pipeline-plugin serve`: the webhook listener (and its worker) on HOST:PORT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import ConfigError
from ..events import SOURCES
from ..settings import default_state_dir
from ..store import add_database_url_flag, use_database_url

# the names without importing the server (and Starlette) for `pipeline-plugin --help`
SHUTDOWN_TIMEOUT_ENV = "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS"
DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="listen for registry webhooks, store them durably, match trigger rules, start pipelines",
        description=f"Listen on POST /webhooks/<source> ({', '.join(SOURCES)}). Each delivery is authenticated "
        "with the source's secret ($PIPELINE_PLUGIN_<SOURCE>_SECRET), "
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
                   help="worker threads (default 2), in a process of their own beside the listener's: pipelines "
                   "of different models run at once; each model's events are processed in order, one at a time")
    p.add_argument("--worker-nice", type=int, default=10, metavar="N",
                   help="how much lower the worker process's CPU priority is than the listener's (nice, 0-19; "
                   "default 10): on busy CPUs deliveries are acknowledged first and matched a moment later")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--tls-cert", type=Path, metavar="PEM",
                   help="serve HTTPS with this certificate (chain); reloaded when the file changes, no restart")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key (with --tls-cert)")
    p.epilog = (f"After SIGTERM, open requests may finish for ${SHUTDOWN_TIMEOUT_ENV} milliseconds "
                f"(default {DEFAULT_SHUTDOWN_TIMEOUT_MS}); then what is left is closed and serve exits 0.")
    p.set_defaults(func=run)


def shutdown_timeout_ms(env=os.environ) -> int:
    raw = env.get(SHUTDOWN_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_SHUTDOWN_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{SHUTDOWN_TIMEOUT_ENV}={raw!r} is not a number of milliseconds; set it to an integer "
                          f">= 0 (default {DEFAULT_SHUTDOWN_TIMEOUT_MS})")
    return value


def run(args: argparse.Namespace) -> int:
    from ..rules import load_rules
    from ..server import Listener, load_config, serve

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number; use 1-65535")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both PEM files for HTTPS, or neither for HTTP")
    shutdown_ms = shutdown_timeout_ms()
    if args.tls_cert is not None:
        from ..tls import server_context

        server_context(args.tls_cert, args.tls_key)  # a bad pair stops serve now, with exit 2
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
        worker_process=True,
        worker_nice=args.worker_nice,
    )
    serve(listener, args.host, args.port, log_level=args.log_level, tls_cert=args.tls_cert, tls_key=args.tls_key,
          shutdown_timeout_ms=shutdown_ms)
    return 0
