"""The `pipeline-plugin` command line.

Each module in ``pipeline_plugin.commands`` defines ``register(subparsers)``, which adds its
subcommand(s) and sets ``func=handler`` where ``handler(args) -> int``. Only ``main`` exits, and it
maps the error tree (see ``errors``) to exit codes: 0 ok, 1 failed checks or stage, 2 bad usage or
config, 3 an external service failed or the command crashed (any other exception: the error type and
text in the message, the CI annotation and the --json result, the traceback on stderr), 4 not found,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

from . import __version__, commands
from .errors import PipelinePluginError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline-plugin",
        description="Continuous deployment of ML models: registry events in, pipelines out.",
    )
    parser.add_argument("--version", action="version", version=f"pipeline-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
    except Exception as exc:  # noqa: BLE001 - a command module that cannot even be imported is a crash
        return _crash(exc, json_output="--json" in argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PipelinePluginError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict()), file=sys.stdout)
        print(f"error: {exc.message}", file=sys.stderr)
        from .ci.output import report_error

        report_error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else is a crash: exit 3, never 1 (failed checks)
        return _crash(exc, json_output=bool(getattr(args, "json", False)))


CRASH_EXIT = 3


def _crash(exc: BaseException, json_output: bool) -> int:
    """An unexpected exception (a bug, a missing module): a short message naming the error type and
    text, the traceback on stderr, the CI annotation, and with --json an error result that
    ``ci-summary`` turns into "failed: <error>". Exit 3, never 1 (1 means the checks failed)."""
    import traceback

    kind = type(exc).__name__
    text = str(exc) or repr(exc)
    message = f"pipeline-plugin crashed: {kind}: {text}"
    if isinstance(exc, ImportError):
        missing = f"module {exc.name!r}" if getattr(exc, "name", None) else "a module"
        message += (f"; {missing} cannot be imported: reinstall pipeline-plugin with its dependencies and the "
                    "extras of what you use (ci, mlflow, postgres, kubernetes, sagemaker, huggingface), e.g. "
                    f"pip install 'pipeline-plugin[ci,mlflow,postgres]=={__version__}'; if it is still missing, "
                    "report it as a bug")
    else:
        message += "; this is a bug in pipeline-plugin, please report it with the traceback above"
    # the traceback always goes to the log (stderr); the annotation and the summary get the one line
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if json_output:
        print(json.dumps({"error": kind, "message": message, "crashed": True}), file=sys.stdout)
    print(f"error: {message}", file=sys.stderr)
    try:
        from .ci.output import report_error

        report_error(message)
    except Exception:  # noqa: BLE001 - reporting must not hide the original crash
        pass
    return CRASH_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
