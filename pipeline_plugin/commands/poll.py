"""`pipeline-plugin poll`: store the versions of registries that cannot push (or have no webhook)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import ConfigError
from ..output import Progress, add_json_flag, emit
from ..settings import default_state_dir
from ..store import add_database_url_flag

SOURCES = ("mlflow", "sagemaker", "azureml", "huggingface", "oci")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "poll",
        help="poll registries (MLflow, SageMaker, Azure ML, the Hub, OCI registries) and store new versions as events",
        description="List the versions a registry holds through its own client or API and store each one the inbox "
        "does not hold yet as an event (the same event its webhook would give: a version announced by both is "
        "stored once). Settings come from the poll: section of the listener config (--config); MLflow needs only "
        "MLFLOW_TRACKING_URI, SageMaker only boto3's usual AWS settings. Without --once it polls every --interval "
        "seconds, retrying a registry that is down with backoff, and takes the inbox lease poll:<source> so that "
        "only one poller per source runs (serve with a poll: section takes the same lease). The first poll of a "
        "registry is a baseline: the versions it holds already are stored as ignored events and start no pipeline "
        "(set since: in the source's settings, e.g. --option since=2026-01-01T00:00:00Z, to announce those dated "
        "at or after it instead); versions registered later are announced.",
    )
    p.add_argument("--source", action="append", choices=SOURCES, metavar="SOURCE",
                   help=f"registry to poll ({'|'.join(SOURCES)}); repeat for several; default: every source of the "
                   "config's poll: section")
    p.add_argument("--config", type=Path, help="the listener's YAML config (its poll: and sources: sections)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="set one of the source's poll settings (YAML value), e.g. --option models=[churn] "
                   "--option registry=http://registry:5000; with one --source only")
    p.add_argument("--once", action="store_true", help="poll once, print each source's counts (seen, new, duplicate, skipped, baseline, errors) and exit (3 "
                   "when a registry failed)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between polls (default: the config's, else 60)")
    p.add_argument("--state-dir", type=Path, help="the inbox (default $PIPELINE_PLUGIN_STATE_DIR), as serve uses it")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace):
    import yaml

    from ..poll import config_section
    from ..server import load_config

    config = load_config(args.config)
    raw: dict = {}
    if args.config is not None:
        raw = dict((yaml.safe_load(args.config.read_text()) or {}).get("poll") or {})
    sources = args.source or list(raw)
    if not sources:
        raise ConfigError("nothing to poll: give --source (" + "|".join(SOURCES) + ") or a --config whose poll: "
                          "section names the registries")
    if args.option and len(sources) != 1:
        raise ConfigError("--option sets one source's settings: give exactly one --source with it")
    section: dict = {}
    for name in dict.fromkeys(sources):
        entry = dict(raw.get(name) or {})
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--option {item!r}: expected KEY=VALUE, e.g. --option models=[churn]")
            try:
                entry[key] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ConfigError(f"--option {item!r}: the value is not YAML: {exc}") from None
        if args.interval is not None:
            entry["interval"] = args.interval
        section[name] = entry
    where = f"{args.config}: poll" if args.config else "poll"
    return config_section(section, where, config.sources)


def run(args: argparse.Namespace) -> int:
    from ..inbox.select import open_inbox
    from ..poll import build
    from ..poll.runner import Runner

    if args.interval is not None and not args.interval > 0:
        raise ConfigError(f"--interval {args.interval}: give a number of seconds above 0")
    settings = _settings(args)
    inbox = open_inbox(args.state_dir or default_state_dir(), args.database_url)  # serve's inbox (or PostgreSQL)
    progress = Progress()
    if args.once:
        results = {}
        for name, s in settings.items():
            progress(f"{name}: polling {build(s).describe()}")
            counts = Runner(build(s), inbox, s, progress=progress).poll_once()
            counts.pop("source", None)
            results[name] = counts
        failed = [n for n, c in results.items() if c["errors"]]
        lines = [f"{n}: {c['seen']} listed, {c['new']} new, {c['duplicate']} already stored"
                 + (f", {c['skipped']} dated before since" if c["skipped"] else "")
                 + (f", {c['baseline']} recorded as baseline (first poll: existing versions start no pipeline; set "
                    "since: to deploy older ones)" if c["baseline"] else "")
                 + (f", FAILED: {c['error']}" if c["error"] else "") for n, c in results.items()]
        emit(args, {"sources": results, "ok": not failed}, "\n".join(lines))
        return 3 if failed else 0  # 3: an external service failed

    from ..poll.service import PollerThread, new_owner

    stop = threading.Event()
    owner = new_owner()
    threads = []
    for name, s in settings.items():
        poller = PollerThread(inbox, s, owner)
        poller.runner.progress = progress
        t = threading.Thread(target=poller.run, args=(stop,), name=f"poller-{name}", daemon=True)
        t.start()
        threads.append(t)
    # SIGINT (Ctrl-C) and SIGTERM (systemd, Kubernetes) both stop the pollers, which give their
    # leases up; the handlers only set the event, so no exception lands inside a write
    received: list[int] = []

    def _stop(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        while not stop.is_set() and any(t.is_alive() for t in threads):
            stop.wait(0.5)
        stop.set()
        deadline = time.monotonic() + 10  # bounded: a lease not given up expires anyway
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        print("stopped: " + signal.Signals(received[0]).name, file=sys.stderr)
        return 130 if received[0] == signal.SIGINT else 0
    return 0
