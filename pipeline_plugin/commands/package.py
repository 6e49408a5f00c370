"""`pipeline-plugin package`: build a model scoring image (or write its Dockerfile and context)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .. import output, settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "package",
        help="build a scoring image for registered model version(s) and an Azure ML style entry script",
        description=(
            "Build a container image that serves POST /score on port 5001 for the given model(s). "
            "Dependencies are downloaded as wheels on this machine and installed offline in the image. "
            "Without --entry-script, an MLflow model folder (sklearn flavor) or an .onnx file gets a "
            "generated scorer."
        ),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME:VERSION=URI",
        help=(
            "a registered model version and where its files are: models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN/PATH "
            "(MLflow, MLFLOW_TRACKING_URI), arn:aws:sagemaker:...:model-package/GROUP/VERSION or s3://BUCKET/KEY (boto3), "
            "azureml://subscriptions/.../workspaces/W/models/NAME/versions/V (AZURE_ACCESS_TOKEN), hf://REPO[@REVISION] "
            "(HF_ENDPOINT, HF_TOKEN), wandb-artifact://ENTITY/PROJECT/NAME:VERSION or wandb-artifact://_id/ID "
            "(WANDB_API_KEY, WANDB_BASE_URL), or a local file or folder; repeat for several models"
        ),
    )
    parser.add_argument("--entry-script", type=Path, metavar="FILE", help="the scoring script with init() and run() (omit for no-code)")
    parser.add_argument("--source-dir", type=Path, metavar="DIR", help="folder copied with the entry script (its code and files)")
    deps = parser.add_mutually_exclusive_group()
    deps.add_argument("--requirements", type=Path, metavar="FILE", help="pip requirements file for the scoring code")
    deps.add_argument("--conda", type=Path, metavar="FILE", help="conda environment file (its pip section is installed)")
    parser.add_argument("--image", required=True, metavar="REPO:TAG", help="the image reference to build")
    parser.add_argument(
        "--base-image",
        default=None,
        metavar="REF",
        help=f"image to build FROM (default: ${settings.BASE_IMAGE_ENV} or {settings.DEFAULT_BASE_IMAGE})",
    )
    parser.add_argument(
        "--generate-dockerfile",
        type=Path,
        metavar="DIR",
        help="write the Dockerfile and its whole build context to DIR instead of building",
    )
    parser.add_argument("--push", action="store_true", help="push the image after building; prints the registry digest")
    parser.add_argument("--source", help="the model registry kind recorded in the image labels (e.g. mlflow)")
    parser.add_argument("--registry", help="the model registry address recorded in the image labels")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every image layer (the wheel cache is still used)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..stages.package import PackageSpec, fetch_models, model_dependencies, package

    progress = output.Progress(enabled=not args.quiet)
    with tempfile.TemporaryDirectory(prefix="pipeline-plugin-fetch-") as tmp:
        fetched = fetch_models(args.model, Path(tmp), progress)
        spec = PackageSpec(
            models=[f.ref for f in fetched],
            image=args.image,
            entry_script=args.entry_script,
            source_dir=args.source_dir,
            requirements=args.requirements,
            conda=args.conda,
            base_image=args.base_image or settings.default_base_image(),
            generate_dockerfile=args.generate_dockerfile,
            source=args.source,
            registry=args.registry,
            push=args.push,
            no_cache=args.no_cache,
        )
        model_dependencies(spec, [f.fetched for f in fetched], progress)
        result = package(spec, progress)
    if result.image_id is None:
        human = f"wrote {result.dockerfile_dir}/Dockerfile and its context; build it with: docker build --network none -t {result.image} {result.dockerfile_dir}"
    else:
        human = f"{result.image} {result.image_id}" + (f"\npushed {result.digest}" if result.digest else "")
    output.emit(args, result.to_dict(), human)
    return 0
