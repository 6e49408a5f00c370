"""``python -m pipeline_plugin.runtime [--entry-script FILE] [--port N] [--workers N] [--host ADDR]``"""

from __future__ import annotations

import argparse
import sys

from . import config
from .server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_plugin.runtime",
        description="Serve an Azure ML style entry script (init()/run()) on POST /score. Settings come from "
                    "the environment (AZUREML_ENTRY_SCRIPT, AZUREML_SOURCE_DIRECTORY, AZUREML_MODEL_DIR, "
                    "WORKER_COUNT, SCORING_TIMEOUT_MS, AML_CORS_ORIGINS, PIPELINE_PLUGIN_SCORING_KEYS[_FILE], "
                    "PIPELINE_PLUGIN_MAX_BODY_BYTES, PORT); flags override them.")
    parser.add_argument("--entry-script", help=f"the scoring script (default: ${config.ENTRY_SCRIPT})")
    parser.add_argument("--port", type=int, help=f"port to listen on (default: ${config.PORT} or 5001)")
    parser.add_argument("--workers", type=int, help=f"worker processes (default: ${config.WORKER_COUNT} or 1)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(entry_script=args.entry_script, port=args.port, workers=args.workers, host=args.host)
    except config.RuntimeConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve(cfg)


if __name__ == "__main__":
    sys.exit(main())
