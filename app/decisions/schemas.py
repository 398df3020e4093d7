"""JSON shapes of exchanges and decisions for /api/v1."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.api.errors import MAX_ROW_ID
from app.decisions.engine import ExchangeRequestIn  # noqa: F401  (the request body, defined with the engine)


class FindingOut(BaseModel):
    rule: str = Field(description="Stable rule code, e.g. `kmisa_signatory`")
    outcome: Literal["pass", "refer", "deny", "not_applicable"]
    message: str = Field(description="What a DPO would write")
    citation: str = Field(description="The legal provision, e.g. `UK GDPR Art 5(1)(b)`")
    evidence: dict[str, Any] = Field(description="What the rule looked at: protocol version, signature, APD")


class ProtocolUsed(BaseModel):
    code: str
    version: int
    sha256: Optional[str]


class DecisionOut(BaseModel):
    outcome: Literal["allow", "allow_emergency", "refer", "deny"]
    as_of: str
    protocol: Optional[ProtocolUsed]
    kmisa_versions: list[str]
    bundle_sha256: str
    emergency_accepted: bool
    retrospective_review_due: Optional[str]
    findings: list[FindingOut]


class ResolutionOut(BaseModel):
    decision: Literal["approved", "refused"]
    reasons: str
    decided_by: str
    decided_at: datetime
    valid_until: Optional[date]


class EmergencyReviewOut(BaseModel):
    due_on: date
    reviewed_by: Optional[str]
    reviewed_at: Optional[datetime]
    conclusion: Optional[str]
    notes: Optional[str]


class ExchangeOut(BaseModel):
    id: int
    status: str = Field(description="allow, allow_emergency, deny, awaiting_dpo, approved or refused")
    may_proceed: bool = Field(description="Whether the data may now be sent")
    requested_at: datetime
    requested_by: str
    from_org: str
    to_org: str
    request: dict[str, Any]
    decision: DecisionOut
    resolution: Optional[ResolutionOut]
    emergency_review: Optional[EmergencyReviewOut]


class ExchangeList(BaseModel):
    exchanges: list[ExchangeOut]
    next_before_id: Optional[int] = Field(description="Pass as before_id for the next page; null on the last")


class ExchangePath(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exchange_id: StrictInt = Field(ge=1, le=MAX_ROW_ID)


class ExchangeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Optional[Literal["allow", "allow_emergency", "refer", "deny"]] = None
    status: Optional[Literal["awaiting_dpo"]] = None
    organisation: Optional[str] = Field(default=None, max_length=64)
    protocol: Optional[str] = Field(default=None, max_length=64)
    since: Optional[date] = None
    until: Optional[date] = None
    limit: int = Field(default=50, ge=1, le=200)
    before_id: Optional[int] = Field(default=None, ge=1, le=MAX_ROW_ID)


class ResolutionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approved", "refused"]
    reasons: str = Field(min_length=1, max_length=10_000)
    valid_until: Optional[date] = Field(default=None, description="Required for an approval")


class EmergencyReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conclusion: Literal["justified", "not_justified"]
    notes: str = Field(min_length=1, max_length=10_000)
