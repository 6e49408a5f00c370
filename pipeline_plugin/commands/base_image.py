"""`pipeline-plugin base-image`: build the local Debian bookworm + python3 base image."""

from __future__ import annotations

import argparse

from .. import output, settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "base-image",
        help="build a local Debian bookworm + python3 base image (debootstrap + docker import)",
        description=(
            "Bootstrap Debian bookworm (minbase + python3, pip, venv, ca-certificates) with debootstrap "
            "and import it into the Docker Engine. Needs root and a reachable Debian mirror; no registry "
            "pull. `pipeline-plugin package` builds FROM it by default."
        ),
    )
    parser.add_argument(
        "--tag",
        default=settings.default_base_image(),
        help=f"image reference to create (default: ${settings.BASE_IMAGE_ENV} or {settings.DEFAULT_BASE_IMAGE})",
    )
    parser.add_argument("--mirror", default=None, metavar="URL", help="Debian mirror URL (default: http://deb.debian.org/debian)")
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..builders.base_image import DEFAULT_MIRROR, build_base_image

    result = build_base_image(args.tag, mirror=args.mirror or DEFAULT_MIRROR, progress=output.Progress())
    output.emit(args, result, f"{result['image']} {result['image_id']}")
    return 0
