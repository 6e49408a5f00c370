"""``GET /swagger.json?version=2|3|3.1``: the same documents azureml-inference-server-http 1.5.1 serves
for the same script (its templates are MIT licensed, Copyright (c) Microsoft Corporation).

A ``swagger.json`` / ``swagger2.json`` / ``swagger3.json`` next to the app wins over the generated
document, as in Azure. Schemas come from inference-schema's ``@input_schema``/``@output_schema``."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("pipeline_plugin.runtime")

ALL_VERSIONS = ["2.0", "3.0", "3.1"]
#: requested version -> canonical builder version
ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
_BUILDER_SUPPORT = {"2": {"2", "2.0"}, "3": {"3", "3.0"}, "3.1": {"3.1"}}

_ERROR_V2 = {"description": "The service failed to execute due to an error.",
             "schema": {"$ref": "#/definitions/ErrorResponse"}}
_ERROR_V3 = {"description": "The service failed to execute due to an error.",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
_HEALTH_DESC = "If service is up and running, this response will be returned with the content 'Healthy'"
_SCORE_OK = "The service processed the input correctly and provided a result prediction, if applicable."
_INPUT_DESC = "The input payload for executing the real-time machine learning service."
_DEFAULT_INPUT = {"type": "object", "properties": {"param": {"type": "object", "additionalProperties": {"type": "object"}}}}
_DEFAULT_OUTPUT = {"type": "object", "additionalProperties": {"type": "object"}}
_ERROR_SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}
_BEARER = {"type": "apiKey", "name": "Authorization", "in": "header", "description": "For example: Bearer abc123"}


def _info(name: str, version: str) -> dict:
    return {"title": name, "description": f"API specification for the Azure Machine Learning service {name}",
            "version": version}


def template_v2(name: str, version: str, prefix: str) -> dict:
    return {
        "swagger": "2.0",
        "info": _info(name, version),
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER)},
        "paths": {
            f"{prefix}/": {"get": {
                "operationId": "ServiceHealthCheck",
                "description": "Simple health check endpoint to ensure the service is up at any given point.",
                "responses": {
                    "200": {"description": _HEALTH_DESC, "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"}},
                    "default": copy.deepcopy(_ERROR_V2)}}},
            f"{prefix}/score": {"post": {
                "operationId": "RunMLService",
                "description": "Run web service's model and get the prediction output",
                "security": [{"Bearer": []}],
                "parameters": [{"name": "serviceInputPayload", "in": "body", "description": _INPUT_DESC,
                                "schema": {"$ref": "#/definitions/ServiceInput"}}],
                "responses": {
                    "200": {"description": _SCORE_OK, "schema": {"$ref": "#/definitions/ServiceOutput"}},
                    "default": copy.deepcopy(_ERROR_V2)}}},
            f"{prefix}/swagger.json": {"get": {
                "operationId": "GetSwaggerSpec",
                "description": "Get the Swagger specification.",
                "parameters": [{"name": "version", "in": "query", "required": False, "type": "integer",
                                "enum": [2, 3]}],
                "responses": {
                    "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                    "default": copy.deepcopy(_ERROR_V2)}}},
        },
        "definitions": {"ServiceInput": copy.deepcopy(_DEFAULT_INPUT), "ServiceOutput": copy.deepcopy(_DEFAULT_OUTPUT),
                        "ErrorResponse": copy.deepcopy(_ERROR_SCHEMA)},
    }


def template_v3(name: str, version: str, prefix: str) -> dict:
    return {
        "openapi": "3.0.3",
        "info": _info(name, version),
        "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {"get": {
                "operationId": "ServiceHealthCheck",
                "description": "Simple health check endpoint to ensure the service is up at any given point.",
                "responses": {
                    "200": {"description": _HEALTH_DESC,
                            "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}}},
                    "default": copy.deepcopy(_ERROR_V3)}}},
            f"{prefix}/score": {"post": {
                "operationId": "RunMLService",
                "description": "Run web service's model and get the prediction output",
                "security": [{"Bearer": []}],
                "requestBody": {"description": _INPUT_DESC, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ServiceInput"}}}},
                "responses": {
                    "200": {"description": _SCORE_OK, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ServiceOutput"}}}},
                    "default": copy.deepcopy(_ERROR_V3)}}},
            f"{prefix}/swagger.json": {"get": {
                "operationId": "GetSwaggerSpec",
                "description": "Get the Swagger specification.",
                "parameters": [{"name": "version", "in": "query", "required": False,
                                "schema": {"type": "integer", "enum": [2, 3]}}],
                "responses": {
                    "200": {"description": "The Swagger specification.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "default": copy.deepcopy(_ERROR_V3)}}},
        },
        "components": {
            "schemas": {"ServiceInput": copy.deepcopy(_DEFAULT_INPUT), "ServiceOutput": copy.deepcopy(_DEFAULT_OUTPUT),
                        "ErrorResponse": copy.deepcopy(_ERROR_SCHEMA)},
            "securitySchemes": {"Bearer": dict(_BEARER)},
        },
    }


class SwaggerError(Exception):
    """The requested version is unknown or not available for this script (answered with 404)."""


def _schema_info(run: Callable) -> tuple[list[str], bool, Any, Any]:
    """(supported versions, decorated?, input schema, output schema) from inference-schema."""
    try:
        from inference_schema.schema_util import (
            get_input_schema, get_output_schema, get_supported_versions, is_schema_decorated)
    except ImportError:
        return list(ALL_VERSIONS), False, None, None
    versions = get_supported_versions(run)
    if is_schema_decorated(run):
        return versions, True, get_input_schema(run), get_output_schema(run)
    return versions, False, None, None


class Swagger:
    """Every document this script can serve, built once at start."""

    def __init__(self, run: Callable, app_root: Path, name: str = "ML service", version: str = "1.0",
                 prefix: str = ""):
        self.documents: dict[str, dict] = {}
        supported, decorated, input_schema, output_schema = _schema_info(run)
        if not decorated:
            input_schema = {"type": "object", "example": {}}
            output_schema = {"type": "object", "example": {}}
        self.supported: list[str] = []
        for builder in ("2", "3", "3.1"):
            doc = self._user_document(app_root, builder)
            if doc is None:
                if not any(v in supported for v in _BUILDER_SUPPORT[builder]):
                    continue
                if builder == "2":
                    doc = template_v2(name, version, prefix)
                    doc["definitions"]["ServiceInput"] = input_schema
                    doc["definitions"]["ServiceOutput"] = output_schema
                else:
                    doc = template_v3(name, version, prefix)
                    doc["components"]["schemas"]["ServiceInput"] = input_schema
                    doc["components"]["schemas"]["ServiceOutput"] = output_schema
                    if builder == "3.1":
                        doc["openapi"] = "3.1.0"
            self.documents[builder] = doc
            self.supported.append(builder)
        # serialized once: serving is then a dictionary look-up
        self.encoded = {v: json.dumps(d).encode("utf-8") for v, d in self.documents.items()}

    @staticmethod
    def _user_document(app_root: Path, builder: str) -> dict | None:
        names = {"2": ["swagger.json", "swagger2.json"], "3": ["swagger3.json"], "3.1": ["swagger3.1.json"]}[builder]
        for name in names:
            path = app_root / name
            if path.is_file():
                doc = json.loads(path.read_text(encoding="utf-8"))
                log.info("serving the swagger document %s for version %s", path, builder)
                return doc
        return None

    def get(self, requested: str | None) -> bytes:
        requested = requested or "2"
        builder = ALIASES.get(requested)
        supported = ", ".join(sorted(self.supported))
        if builder is None:
            raise SwaggerError(f"Swagger version [{requested}] is not valid. Supported versions: [{supported}].")
        if builder not in self.encoded:
            raise SwaggerError(f"Swagger version [{requested}] is not supported for the scoring script. "
                               f"Supported swagger versions: [{supported}].")
        return self.encoded[builder]
