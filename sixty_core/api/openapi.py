"""``GET /openapi.json``, generated from the msgspec schemas in :mod:`sixty_core.models`.

Each operation is declared once in :data:`OPERATIONS`; request and response bodies come
from ``msgspec.json.schema_components`` so the document cannot drift from the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sixty_core import __version__
from sixty_core.listing import MAX_PAGE_SIZE, SORT_FIELDS
from sixty_core.models import (
    BulkRequest,
    Deal,
    DealCreate,
    DealUpdate,
    ErrorEnvelope,
    MoveRequest,
)

REF = "#/components/schemas/{name}"


class DealEnvelope(msgspec.Struct):
    data: Deal
    error: None


class DealListEnvelope(msgspec.Struct):
    data: list[Deal]
    error: None
    count: int
    next_cursor: str | None


class LegacyCreatedEnvelope(msgspec.Struct):
    """The original's create answer: the deal double-wrapped, a message in ``error``."""

    data: dict[str, Deal]
    error: str


class AnyEnvelope(msgspec.Struct):
    data: Any
    error: None
    count: int | None = None


SCHEMAS: tuple[type[msgspec.Struct], ...] = (
    DealCreate,
    DealUpdate,
    MoveRequest,
    BulkRequest,
    ErrorEnvelope,
    Deal,
    DealEnvelope,
    DealListEnvelope,
    LegacyCreatedEnvelope,
    AnyEnvelope,
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    request: type[msgspec.Struct] | None = None
    response: str = "AnyEnvelope"
    status: int = 200
    auth: bool = True
    query: tuple[dict[str, Any], ...] = ()
    path_id: bool = False
    errors: tuple[int, ...] = (400, 401, 503)


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_UUID = {"type": "string", "format": "uuid"}
LIST_QUERY = (
    _q(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        "page size (default 50); the legacy profile returns every deal",
    ),
    _q("offset", {"type": "integer", "minimum": 0, "maximum": 100_000}, "rows to skip"),
    _q("cursor", {"type": "string", "maxLength": 1000}, "next_cursor of the previous page"),
    _q("sort", {"type": "string", "enum": list(SORT_FIELDS)}, "sort field"),
    _q("order", {"type": "string", "enum": ["asc", "desc"]}, "sort order"),
    _q("status", {"type": "string", "enum": ["active", "won", "lost"]}, "status filter"),
    _q("stage_id", _UUID, "stage filter"),
    _q("owner_id", _UUID, "owner filter (admins; others may only pass their own id)"),
    _q("search", {"type": "string", "maxLength": 200}, "name or company contains"),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/api/deals",
        "listDeals",
        "List visible deals",
        response="DealListEnvelope",
        query=LIST_QUERY,
        errors=(400, 401, 403, 503),
    ),
    Operation(
        "post",
        "/api/deals",
        "createDeal",
        "Create a deal (Idempotency-Key: a repeat answers the first deal, another body 422)",
        request=DealCreate,
        response="DealEnvelope",
        status=201,
        errors=(400, 401, 403, 408, 409, 422, 503),
    ),
    Operation(
        "get",
        "/api/deals/pipeline-stats",
        "pipelineStats",
        "Pipeline by stage, weighted by stage probability",
        query=(_q("owner_id", _UUID, "owner (admins)"),),
        errors=(400, 401, 403, 503),
    ),
    Operation(
        "post",
        "/api/deals/bulk",
        "bulkDeals",
        "Stage update or delete, all or none",
        request=BulkRequest,
        errors=(400, 401, 404, 408, 503),
    ),
    Operation(
        "get",
        "/api/deals/{deal_id}",
        "getDeal",
        "One deal",
        response="DealEnvelope",
        path_id=True,
        errors=(400, 401, 404, 503),
    ),
    Operation(
        "patch",
        "/api/deals/{deal_id}",
        "updateDeal",
        "Change allow-listed fields",
        request=DealUpdate,
        response="DealEnvelope",
        path_id=True,
        errors=(400, 401, 404, 408, 409, 503),
    ),
    Operation(
        "delete",
        "/api/deals/{deal_id}",
        "deleteDeal",
        "Delete a deal",
        path_id=True,
        errors=(400, 401, 404, 503),
    ),
    Operation(
        "post",
        "/api/deals/{deal_id}/move",
        "moveDeal",
        "Move a deal to a stage",
        request=MoveRequest,
        response="DealEnvelope",
        path_id=True,
        errors=(400, 401, 404, 408, 409, 503),
    ),
    Operation("get", "/api/stages", "listStages", "Pipeline stages"),
    Operation("get", "/api/owners", "listOwners", "Deal owners"),
    Operation(
        "get",
        "/api/companies",
        "listCompanies",
        "Companies",
        query=(
            _q("search", {"type": "string", "maxLength": 200}, "name or domain"),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "max rows"),
        ),
    ),
    Operation("post", "/api/auth/logout", "logout", "Revoke the caller's token"),
    Operation(
        "get",
        "/api/health",
        "health",
        "Health; detailed=true (admins' bearer token only) adds versions, pool, cache, memory",
        auth=False,
        query=(_q("detailed", {"type": "string", "enum": ["true", "false"]}, "detail"),),
        errors=(401, 403, 503),
    ),
)


def build_openapi(*, legacy_create: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``legacy_create`` documents the original's create body."""
    _, components = msgspec.json.schema_components(SCHEMAS, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        response = op.response
        if op.operation_id == "createDeal" and legacy_create:
            response = "LegacyCreatedEnvelope"
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "parameters": list(op.query),
            "responses": {
                str(op.status): {
                    "description": "success",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(name=response)}}
                    },
                },
                **{
                    str(code): {
                        "description": "error",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": REF.format(name="ErrorEnvelope")}
                            }
                        },
                    }
                    for code in op.errors
                },
            },
        }
        if op.path_id:
            item["parameters"].append(
                {"name": "deal_id", "in": "path", "required": True, "schema": _UUID}
            )
        if op.auth:
            item["security"] = [{"bearer": []}]
            item["responses"].setdefault("401", {"description": "missing or bad token"})
        if op.request is not None:
            item["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(name=op.request.__name__)}}
                },
            }
        paths.setdefault(op.path, {})[op.method] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "sixty deal service", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
