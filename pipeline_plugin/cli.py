"""The `pipeline-plugin` command line.

Each module in ``pipeline_plugin.commands`` defines ``register(subparsers)``, which adds its
subcommand(s) and sets ``func=handler`` where ``handler(args) -> int``. Only ``main`` exits, and it
maps the error tree (see ``errors``) to exit codes: 0 ok, 1 failed checks or stage, 2 bad usage or
config, 3 an external service failed, 4 not found, 130 interrupted.
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PipelinePluginError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict()), file=sys.stdout)
        print(f"error: {exc.message}", file=sys.stderr)
        from .ci_output import report_error

        report_error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
