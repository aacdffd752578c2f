"""The deal service: the rules of every deal operation, per profile. No SQL, no HTTP.

Profile differences live in strategy objects chosen when the app is built
(:mod:`sixty_core.api.components`): how lists are read (:class:`UnboundedLists` vs
:class:`BoundedLists`) and how deals are created (:class:`LegacyCreate` vs
:class:`RobustCreate`); the :class:`DealService` methods never look at flags. Each legacy
behaviour names the section of ORIGINAL_SYSTEM.md it reproduces.

Tenant isolation is enforced here for every operation: a non-admin sees and changes only
their own deals; another owner's deal is reported as not found (its existence is not
revealed), and acting for another owner is forbidden.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from sixty_core.auth import User
from sixty_core.cache import FrozenRows, derived, freeze
from sixty_core.db.repository import (
    INTERNAL_DEAL_COLUMNS,
    Repository,
    check_replay,
    deal_write_tags,
)
from sixty_core.edge.client import LegacyEdgeClient, OptimizedEdgeClient
from sixty_core.errors import (
    ForbiddenError,
    NotFoundError,
    SixtyError,
    UpstreamError,
    ValidationError,
)
from sixty_core.listing import ListQuery
from sixty_core.models import (
    BulkRequest,
    Deal,
    DealCreate,
    DealUpdate,
    present_fields,
)
from sixty_core.static_data import StaticData
from sixty_core.types import Row

#: Fields the optimized create insists on (the original AFTER validation).
REQUIRED_CREATE_FIELDS = ("name", "company", "owner_id")


@dataclass(frozen=True)
class DealPage:
    """A list result: the deals, and the cursor of the next page (None when done)."""

    deals: Sequence[Row]
    next_cursor: str | None


@dataclass(frozen=True)
class CreatedDeal:
    """A created deal and how it was made.

    ``degraded``: the edge upstream failed and the fallback insert served the request.
    ``legacy_envelope``: answer in the original's broken shape
    ``{data: {data: deal}, error: "Deal created successfully"}`` (ORIGINAL_SYSTEM.md §3.6).
    ``replayed``: the caller's Idempotency-Key had already created this deal; nothing was
    written.
    """

    deal: Row
    degraded: bool
    legacy_envelope: bool
    replayed: bool = False


# --- list strategies ---------------------------------------------------------------------


class ListStrategy(Protocol):
    async def list_deals(self, query: ListQuery) -> DealPage: ...


class UnboundedLists:
    """Legacy: ``SELECT *`` of every visible deal, no limit, no joins; stage and company
    names filled in afterwards from separate lookups, as the original's fallbacks did
    (ORIGINAL_SYSTEM.md §2.1 "Fetch path" and "Post-processing")."""

    def __init__(self, repository: Repository, static: StaticData) -> None:
        self._repo = repository
        self._static = static

    async def list_deals(self, query: ListQuery) -> DealPage:
        deals = await self._repo.list_deals_unbounded(query)
        stages = {s["id"]: s for s in await self._static.stages()}
        companies = {c["id"]: c["name"] for c in await self._static.companies()}
        now = dt.datetime.now(dt.UTC)
        filled = []
        for deal in deals:
            stage = stages.get(deal["stage_id"], {})
            row = {k: v for k, v in deal.items() if k not in INTERNAL_DEAL_COLUMNS}
            row["stage_name"] = stage.get("name")
            row["stage_color"] = stage.get("color")
            row["company_name"] = companies.get(deal["company_id"])
            row["days_in_stage"] = (now - deal["stage_changed_at"]).days
            filled.append(row)
        return DealPage(filled, None)


class BoundedLists:
    """Optimized: one joined query, ``limit`` rows (max 500), keyset pagination."""

    def __init__(self, repository: Repository) -> None:
        self._repo = repository

    async def list_deals(self, query: ListQuery) -> DealPage:
        deals, next_cursor = await self._repo.list_deals_page(query)
        return DealPage(deals, next_cursor)


# --- create strategies -------------------------------------------------------------------


class CreateStrategy(Protocol):
    async def create(
        self, user: User, body: DealCreate, *, idempotency_key: str | None
    ) -> CreatedDeal: ...

    def get_stats(self) -> dict[str, Any]: ...


def _default_stage(stages: Sequence[Row]) -> Any:
    """The original DealWizard's default: the first 'opportunity' or 'lead' stage, else the
    first stage."""
    for stage in stages:
        name = str(stage["name"]).lower()
        if "opportunity" in name or "lead" in name:
            return stage["id"]
    if not stages:
        raise ValidationError("no deal stages exist: seed the database first")
    return stages[0]["id"]


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_owner(user: User, owner_id: Any) -> None:
    if not user.is_admin and owner_id != user.id:
        raise ForbiddenError("you may only create deals that you own")


class _CreateBase:
    def __init__(
        self,
        edge: LegacyEdgeClient | OptimizedEdgeClient,
        repository: Repository,
        static: StaticData,
    ) -> None:
        self._edge: LegacyEdgeClient | OptimizedEdgeClient = edge
        self._repo = repository
        self._static = static
        self.fallbacks = 0
        self.creates = 0
        self.replays = 0

    def get_stats(self) -> dict[str, Any]:
        return {
            "creates": self.creates,
            "create_fallbacks": self.fallbacks,
            "create_replays": self.replays,
            **self._edge.get_stats(),
        }

    def _after_edge_write(self, deal: Mapping[str, Any]) -> Row:
        """The edge's deal as a typed row (answered exactly as a read would be), after
        invalidating what the write made stale. UpstreamError if it breaks the schema."""
        try:
            row = msgspec.structs.asdict(msgspec.convert(dict(deal), Deal, strict=False))
        except msgspec.ValidationError as exc:
            raise UpstreamError(
                f"the edge answered a deal that breaks the contract: {exc}"
            ) from None
        # The edge wrote through its own process: our caches did not see the write.
        self._repo.invalidate(deal_write_tags([row["owner_id"]], [row["id"]]))
        return row


class LegacyCreate(_CreateBase):
    """The original create (ORIGINAL_SYSTEM.md §2.1 "Mutations", §4.3, §4.4): the edge with
    the mutation retry policy (``maxRetries 1``: 2 attempts, waits of 1 s then 2 s times
    ``time_scale``), then a fallback insert with no idempotency; answered in the original's
    shape. Only a missing ``name`` is refused, as the original dev server did; ``company``
    defaults to the name and ``owner_id`` to the caller (§4.4)."""

    def __init__(self, edge: LegacyEdgeClient, repository: Repository, static: StaticData):
        super().__init__(edge, repository, static)
        self._legacy_edge = edge

    async def create(
        self, user: User, body: DealCreate, *, idempotency_key: str | None
    ) -> CreatedDeal:
        self.creates += 1
        if not body.name:
            raise ValidationError("Deal name is required")
        fields = present_fields(body)
        fields.setdefault("company", body.name)
        fields.setdefault("owner_id", user.id)
        _check_owner(user, fields["owner_id"])
        if "stage_id" not in fields:
            fields["stage_id"] = _default_stage(await self._static.stages())
        try:
            deal = self._after_edge_write(await self._legacy_edge.create_deal(fields))
            degraded = False
        except SixtyError:
            self.fallbacks += 1
            deal, _ = await self._repo.insert_deal(fields, idempotency_key=None)
            degraded = True
        return CreatedDeal(deal, degraded=degraded, legacy_envelope=True)


class RobustCreate(_CreateBase):
    """The fixed create: validate, one edge attempt + one retry under a deadline behind a
    breaker, then a fallback insert with the same idempotency key (exactly once).

    A caller's ``Idempotency-Key`` is looked up first: a repeat of the same body answers the
    first deal (``replayed``) without calling the edge; the same key with another body is
    refused (:class:`~sixty_core.errors.IdempotencyKeyReusedError`, 422)."""

    def __init__(self, edge: OptimizedEdgeClient, repository: Repository, static: StaticData):
        super().__init__(edge, repository, static)
        self._robust_edge = edge

    async def create(
        self, user: User, body: DealCreate, *, idempotency_key: str | None
    ) -> CreatedDeal:
        self.creates += 1
        missing = [f for f in REQUIRED_CREATE_FIELDS if _is_blank(getattr(body, f))]
        if missing:
            raise ValidationError(f"missing required fields: {', '.join(missing)}")
        fields = present_fields(body)
        _check_owner(user, fields["owner_id"])
        stages = await self._static.stages()
        if "stage_id" not in fields:
            fields["stage_id"] = _default_stage(stages)
        elif str(fields["stage_id"]) not in {str(stage["id"]) for stage in stages}:
            # Refused here, not by the upstream: bad input must never count against it.
            raise ValidationError(f"stage_id {fields['stage_id']} is not a deal stage")
        # Keys are scoped to the caller: another user's key names another deal, never theirs.
        key = f"{user.id}:{idempotency_key or uuid.uuid4()}"
        if idempotency_key is not None:
            found = await self._repo.find_by_idempotency_key(key)
            if found is not None:
                self.replays += 1
                deal = check_replay(found, fields)
                return CreatedDeal(deal, degraded=False, legacy_envelope=False, replayed=True)
        try:
            deal = self._after_edge_write(await self._robust_edge.create_deal(fields, key))
            return CreatedDeal(deal, degraded=False, legacy_envelope=False)
        except UpstreamError:
            # Only an upstream failure falls back; a refused deal (400/409/422) is passed on.
            self.fallbacks += 1
            deal, _ = await self._repo.insert_deal(fields, idempotency_key=key)
            return CreatedDeal(deal, degraded=True, legacy_envelope=False)


# --- the service -------------------------------------------------------------------------


class DealService:
    """Every deal operation, for an authenticated :class:`User`."""

    def __init__(
        self,
        repository: Repository,
        static: StaticData,
        lists: ListStrategy,
        creator: CreateStrategy,
    ) -> None:
        self._repo = repository
        self._static = static
        self._lists = lists
        self._creator = creator

    def get_stats(self) -> dict[str, Any]:
        return self._creator.get_stats()

    async def list_deals(self, user: User, query: ListQuery) -> DealPage:
        """Deals visible to ``user``; a non-admin asking for another owner is forbidden."""
        if not user.is_admin and query.owner_id not in (None, user.id):
            raise ForbiddenError("you may only list your own deals")
        return await self._lists.list_deals(query)

    async def get_deal(self, user: User, deal_id: uuid.UUID) -> Row:
        deal = await self._repo.get_deal(deal_id, user.visible_owner)
        if deal is None:
            raise NotFoundError(f"deal {deal_id} not found")
        return deal

    async def create_deal(
        self, user: User, body: DealCreate, *, idempotency_key: str | None = None
    ) -> CreatedDeal:
        return await self._creator.create(user, body, idempotency_key=idempotency_key)

    async def update_deal(self, user: User, deal_id: uuid.UUID, body: DealUpdate) -> Row:
        """Change allow-listed fields; 400 when nothing to change, 409 on a stale version."""
        fields = present_fields(body)
        version = fields.pop("version", None)
        if not fields:
            raise ValidationError("no fields to update")
        deal = await self._repo.update_deal(
            deal_id,
            fields,
            visible_to=user.visible_owner,
            expected_version=version,
            user_id=user.id,
        )
        if deal is None:
            raise NotFoundError(f"deal {deal_id} not found")
        return deal

    async def move_deal(self, user: User, deal_id: uuid.UUID, stage_id: uuid.UUID) -> Row:
        """Move a deal to a stage: sets stage_changed_at and records the stage history."""
        await self._check_stage(stage_id)
        return await self.update_deal(user, deal_id, DealUpdate(stage_id=stage_id))

    async def delete_deal(self, user: User, deal_id: uuid.UUID) -> dict[str, Any]:
        if not await self._repo.delete_deal(deal_id, visible_to=user.visible_owner):
            raise NotFoundError(f"deal {deal_id} not found")
        return {"id": deal_id}

    async def bulk(self, user: User, body: BulkRequest) -> dict[str, Any]:
        """One operation over many deals in one transaction: all change, or none."""
        if body.operation == "update_stage":
            if body.stage_id is None:
                raise ValidationError("stage_id is required for a bulk stage update")
            await self._check_stage(body.stage_id)
        affected = await self._repo.bulk(
            body.operation,
            body.deal_ids,
            visible_to=user.visible_owner,
            stage_id=body.stage_id,
            user_id=user.id,
        )
        if affected is None:
            raise NotFoundError("one or more deals were not found; nothing was changed")
        return {
            "operation": body.operation,
            "affected_deals": len(affected),
            "results": [{"id": d} for d in affected],
        }

    async def pipeline_stats(self, user: User, owner_id: uuid.UUID | None) -> dict[str, Any]:
        """Per-stage counts and values, weighted by each stage's default probability."""
        if not user.is_admin:
            if owner_id not in (None, user.id):
                raise ForbiddenError("you may only see your own pipeline")
            owner_id = user.id
        stages = await self._repo.pipeline_stats(owner_id)
        if isinstance(stages, FrozenRows):
            # A cached stage list never changes, so neither do its sums: summed once, and
            # frozen so the answer's encoding is made once too. The summary holds a copy of
            # the list (same rows): holding ``stages`` itself would be a reference cycle.
            summary: dict[str, Any] = derived(
                stages, "pipeline", lambda: freeze(_summarize(FrozenRows(stages)))
            )
            return summary
        return _summarize(stages)

    async def stages(self) -> Sequence[Row]:
        return await self._static.stages()

    async def owners(self) -> Sequence[Row]:
        return await self._static.owners()

    async def companies(self, *, search: str | None, limit: int) -> Sequence[Row]:
        rows = await self._static.companies()
        if search:
            needle = search.lower()
            rows = [
                c
                for c in rows
                if needle in str(c["name"]).lower() or needle in str(c.get("domain") or "").lower()
            ]
        # The whole cached list, when it fits, keeps its encoding memo (cache.derived).
        return rows if len(rows) <= limit else rows[:limit]

    async def _check_stage(self, stage_id: uuid.UUID) -> None:
        if stage_id not in {s["id"] for s in await self._static.stages()}:
            raise ValidationError(f"stage {stage_id} does not exist")


def _summarize(stages: Sequence[Row]) -> dict[str, Any]:
    """Per-stage rows -> the pipeline-stats answer: the rows and the overall figures."""
    total = sum(int(s["deal_count"]) for s in stages)
    pipeline_value = sum((Decimal(s["active_value"]) for s in stages), Decimal(0))
    won_value = sum((Decimal(s["won_value"]) for s in stages), Decimal(0))
    all_value = sum((Decimal(s["total_value"]) for s in stages), Decimal(0))
    return {
        "stages": stages,
        "overall": {
            "total_deals": total,
            "active_deals": sum(int(s["active_count"]) for s in stages),
            "won_deals": sum(int(s["won_count"]) for s in stages),
            "lost_deals": sum(int(s["lost_count"]) for s in stages),
            "pipeline_value": pipeline_value,
            "weighted_pipeline_value": sum(
                (Decimal(s["weighted_value"]) for s in stages), Decimal(0)
            ),
            "won_value": won_value,
            "avg_deal_size": (all_value / total).quantize(Decimal("0.01")) if total else 0,
        },
    }


def decode_edge_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Typed create fields from the JSON the edge upstream received (for its writer)."""
    try:
        return present_fields(msgspec.convert(dict(fields), DealCreate, strict=False))
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid deal: {exc}") from None
