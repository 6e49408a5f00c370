"""Process model: one listening socket, WORKER_COUNT worker processes (spawned, each importing the
entry script and calling init() itself), SIGTERM drains in-flight requests before exiting, for at
most PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS (then what is left is closed)."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from multiprocessing.sharedctypes import RawArray

from .config import RuntimeConfig
from .metrics import Metrics, shared_block

log = logging.getLogger("pipeline_plugin.runtime")


def setup_logging() -> None:
    root = logging.getLogger("pipeline_plugin.runtime")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("PIPELINE_PLUGIN_LOG_LEVEL", "INFO").upper())
        root.propagate = False


def bind(host: str, port: int, reuseport: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio's event loop sets TCP_NODELAY on accepted connections only when
    # the listening socket says TCP (a plain SOCK_STREAM socket has proto 0), and without TCP_NODELAY a
    # response written as headers + body stalls 40 ms on delayed ACKs (uvicorn issue 3149). uvloop
    # sets it either way; tests/runtime checks both loops.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"error: cannot listen on {host}:{port} ({exc.strerror}); free the port or set PORT "
                         f"(or --port) to another one") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_worker(cfg: RuntimeConfig, sock: socket.socket, block, ready_flags, index: int) -> None:
    """Serve on ``sock`` in this process until SIGTERM/SIGINT (or init() failing: exit 3)."""
    import uvicorn

    from .app import ScoringApp

    setup_logging()
    exit_code = 0
    server: uvicorn.Server | None = None

    def fatal(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        if server is not None:
            server.should_exit = True

    app = ScoringApp(cfg, Metrics(block, index, cfg.workers), ready_flags, index, fatal)
    server = uvicorn.Server(uvicorn.Config(
        app, loop=os.environ.get("PIPELINE_PLUGIN_LOOP", "auto"), lifespan="on", access_log=False, log_level="warning", server_header=False,
        timeout_graceful_shutdown=cfg.shutdown_timeout_ms / 1000.0, backlog=2048))
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler found at start:
    # a no-op one makes a drained shutdown exit 0 instead of dying by the signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    server.run(sockets=[sock])
    # every answer is sent (or was cut by PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS): exit now, without
    # waiting for a scoring thread still inside an abandoned run() (Python would join it at exit)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def listening_sockets(host: str, port: int, workers: int) -> list[socket.socket]:
    """One listening socket per worker, bound with SO_REUSEPORT where the kernel has it: the kernel
    then spreads new connections over the workers by a hash of their addresses. With one shared
    socket, whichever worker's event loop wakes first accepts a whole burst of connections (wrk's 32
    arriving together all landed on one worker in 4 of 14 launches, halving throughput).
    PIPELINE_PLUGIN_REUSEPORT=0 (or a kernel without it) keeps one shared socket."""
    if workers > 1 and hasattr(socket, "SO_REUSEPORT") and os.environ.get("PIPELINE_PLUGIN_REUSEPORT", "1") != "0":
        first = bind(host, port, reuseport=True)
        port = first.getsockname()[1]
        try:
            return [first] + [bind(host, port, reuseport=True) for _ in range(workers - 1)]
        except SystemExit:
            first.close()
            raise
    return [bind(host, port)] * (1 if workers == 1 else workers)


def serve(cfg: RuntimeConfig) -> int:
    setup_logging()
    sockets = listening_sockets(cfg.host, cfg.port, cfg.workers)
    sock = sockets[0]
    block = shared_block(cfg.workers)
    ready = RawArray("b", cfg.workers)
    log.info("serving %s on %s:%d with %d worker(s), scoring timeout %d ms%s%s", cfg.entry_script, cfg.host,
             cfg.port, cfg.workers, cfg.timeout_ms, ", key auth on" if cfg.keys else "",
             f", CORS for {', '.join(cfg.cors_origins)}" if cfg.cors_origins else "")
    if not cfg.model_dir:
        log.warning("AZUREML_MODEL_DIR is not set: a script that loads its model from there will fail in init()")
    if cfg.workers == 1:
        run_worker(cfg, sock, block, ready, 0)
        return 0

    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run_worker, args=(cfg, sockets[i], block, ready, i), name=f"score-worker-{i}")
               for i in range(cfg.workers)]
    for p in workers:
        p.start()
    stopping = False
    exit_code = 0

    def stop(signum=signal.SIGTERM, frame=None) -> None:
        nonlocal stopping
        stopping = True
        for p in workers:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    alive = list(workers)
    while alive:
        multiprocessing.connection.wait([p.sentinel for p in alive])
        for p in [p for p in alive if not p.is_alive()]:
            alive.remove(p)
            p.join()
            if not stopping:
                log.error("%s exited with code %s; stopping the other workers", p.name, p.exitcode)
                exit_code = p.exitcode or 1
                stop()
    for each in set(sockets):
        each.close()
    return exit_code
