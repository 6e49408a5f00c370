"""`pipeline-plugin listener-image`: build the webhook listener's image (`serve`, non-root) FROM the
local base image, offline from a wheelhouse."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import output, settings


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "listener-image",
        help="build the webhook listener's image (pipeline-plugin serve, non-root) FROM the local base image",
        description=(
            "Build an image running `pipeline-plugin serve --host 0.0.0.0 --port 8080` as an unprivileged user "
            "(uid 10001), FROM the base image (`pipeline-plugin base-image`), with this pipeline-plugin and the "
            "chosen extras installed offline from a wheelhouse. Mount the TLS files, the config and the trigger "
            "rules (/etc/pipeline-plugin/triggers) and pass their flags as the container's arguments, e.g. "
            "`--tls-cert /etc/pipeline-plugin/tls/tls.crt --tls-key /etc/pipeline-plugin/tls/tls.key "
            "--triggers /etc/pipeline-plugin/triggers`. See docs/listener.md, 'Running as a service'."
        ),
    )
    p.add_argument("--tag", required=True, help="image reference to create, e.g. registry.example.com/pipeline-plugin-listener:1")
    p.add_argument("--extras", default="", metavar="E1,E2",
                   help="pipeline-plugin extras to install, comma-separated (e.g. postgres,mlflow,ci)")
    p.add_argument("--base-image", default=settings.default_base_image(),
                   help=f"image to build FROM (default: ${settings.BASE_IMAGE_ENV} or {settings.DEFAULT_BASE_IMAGE})")
    p.add_argument("--generate-dockerfile", type=Path, metavar="DIR",
                   help="only write the build context (Dockerfile, wheels, source) into DIR; build nothing")
    output.add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..builders.listener_image import build

    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    result = build(args.tag, args.base_image, extras, progress=output.Progress(),
                   generate_dockerfile=args.generate_dockerfile)
    human = (f"{result['image']} {result['image_id']}" if result.get("image")
             else f"build context written to {result['context']}")
    output.emit(args, result, human)
    return 0
