"""``GET /openapi.json``, generated from the model card's real schema.

Feature names and types come from ``model.json``, so a generated client (or schemathesis)
sees the columns the model takes, not "any object": numbers, or strings with the categories
seen in training as an ``enum`` (other values are served and ignored by the model), and
``nullable`` where the model takes a missing value.
"""

from __future__ import annotations

from typing import Any

from serving.card import Feature, ModelCard
from serving.experiment import feedback_schemas
from serving.protocols.oip import label_datatype
from serving.routes import ROUTES
from serving.schema import MAX_TEXT_LENGTH

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"


def _ok(
    description: str, schema: dict[str, Any], media: str = "application/json"
) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "invalid input, named in the message",
        404: "unknown model or version",
        413: "too many rows or bytes",
        415: "unsupported Content-Type",
        503: "model not ready",
    }
    return {str(s): _ok(reasons[s], {"$ref": _REF + "Error"}) for s in statuses}


def column_schema(feature: Feature) -> dict[str, Any]:
    """One column's JSON schema: its kind, the categories seen in training, nullability."""
    schema: dict[str, Any]
    if feature.categorical:
        schema = {
            "type": "string",
            "maxLength": MAX_TEXT_LENGTH,
            "enum": list(feature.categories or ()),
            "description": "a category seen in training; other values are served and ignored "
            "by the model (counted in /metrics)",
        }
    elif feature.integer:
        schema = {"type": "integer"}
    else:
        schema = {"type": "number", "format": "double"}
    if feature.nullable:
        schema["nullable"] = True
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def openapi_document(
    card: ModelCard, *, max_rows: int, probability_datatype: str
) -> dict[str, Any]:
    names = list(card.feature_names)
    width = len(names)
    number = {"type": "number", "format": "double"}
    props = {f.name: column_schema(f) for f in card.features}
    label: dict[str, Any]
    if card.regression:
        label = number
    else:
        label_type = "integer" if label_datatype(card) == "INT64" else "string"
        label = {"type": label_type, "enum": list(card.classes)}
    typed = any(f.categorical or f.nullable for f in card.features)
    row = {
        "type": "array",
        # OpenAPI 3.0 has no per-position item schemas: a typed row takes any column's type
        "items": {"anyOf": [column_schema(f) for f in card.features]} if typed else number,
        "minItems": width,
        "maxItems": width,
        "description": f"values in this column order: {names}",
    }
    rows = {"type": "array", "items": {"$ref": _REF + "Row"}, "minItems": 1, "maxItems": max_rows}
    records = {
        "type": "array",
        "items": {"$ref": _REF + "Record"},
        "minItems": 1,
        "maxItems": max_rows,
    }

    def one(key: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": [key], "properties": {key: schema}}

    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "example": "input"},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "example": [1, width],
            },
            "datatype": {
                "type": "string",
                "enum": ["FP64", "FP32", "FP16", "INT64", "INT32"] + (["BYTES"] if typed else []),
            },
            "data": {"type": "array", "items": {}},
        },
    }
    schemas: dict[str, Any] = {
        "Row": row,
        "Record": {
            "type": "object",
            "properties": props,
            "required": names,
            "additionalProperties": False,
        },
        "InvocationsRequest": {
            "oneOf": [
                one(
                    "dataframe_split",
                    {
                        "type": "object",
                        "required": ["data"],
                        "additionalProperties": False,
                        "properties": {
                            "columns": {
                                "type": "array",
                                "items": {"type": "string", "enum": names},
                                "minItems": width,
                                "maxItems": width,
                                "uniqueItems": True,
                            },
                            "data": rows,
                            "index": {"type": "array"},
                        },
                    },
                ),
                one("dataframe_records", records),
                one("instances", {"oneOf": [rows, records]}),
                one("inputs", {"oneOf": [rows, records]}),
            ]
        },
        "Predictions": {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array", "items": label}},
        },
        "Error": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {
                "error_code": {"type": "string"},
                "message": {"type": "string"},
                "error": {"type": "string"},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": tensor, "minItems": 1},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {
                                "type": "string",
                                "enum": ["prediction"]
                                if card.regression
                                else ["label", "probabilities"],
                            }
                        },
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array"},
            },
        },
    }
    schemas.update(feedback_schemas(label))
    first = [(f.categories or ("",))[0] if f.categorical else "0" for f in card.features]
    csv_example = ",".join(f'"{n}"' for n in names) + "\n" + ",".join(first)
    name_parameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [card.model_name]},
    }
    paths: dict[str, Any] = {}
    for route in ROUTES:
        if route.handler == "docs":  # HTML for people, not part of the machine contract
            continue
        operation: dict[str, Any] = {"summary": route.summary, "operationId": route.handler}
        if "{name}" in route.path:
            operation["parameters"] = [name_parameter]
        if route.request is not None:
            content = _ok("", {"$ref": _REF + route.request})["content"]
            if route.csv:
                content["text/csv"] = {"schema": {"type": "string"}, "example": csv_example}
            operation["requestBody"] = {"required": True, "content": content}
        ok = (
            _ok(route.response_description, {"$ref": _REF + route.response})
            if route.response is not None
            else {"description": route.response_description}
        )
        operation["responses"] = {"200": ok, **_errors(*route.errors)}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{card.model_name} prediction service",
            "version": card.model_version,
            "description": (
                "A regressor: predicted values (FP64)."
                if card.regression
                else f"Labels {list(card.classes)}; probabilities {probability_datatype}."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
