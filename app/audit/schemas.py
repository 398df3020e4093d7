"""JSON shapes of the audit trail for /api/v1. Unknown fields are refused."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

#: The largest sequence number a query accepts: PostgreSQL's BIGINT.
MAX_SEQ = 2**63 - 1


class EventQuery(BaseModel):
    """Filters (all optional, combined with AND) and a keyset cursor; newest first."""

    model_config = ConfigDict(extra="forbid")

    organisation: Optional[str] = Field(default=None, max_length=64,
                                        description="An organisation the event concerns (as actor's organisation "
                                                    "or as the other party)")
    protocol: Optional[str] = Field(default=None, max_length=64, description="Protocol code, every version")
    subgroup: Optional[str] = Field(default=None, max_length=64)
    outcome: Optional[Literal["allow", "allow_emergency", "refer", "deny"]] = None
    actor: Optional[str] = Field(default=None, max_length=254, description="E-mail or system label, exactly")
    action: Optional[str] = Field(default=None, max_length=64, description="e.g. `exchange.recorded`, exactly")
    subject_type: Optional[str] = Field(default=None, max_length=32)
    subject_id: Optional[str] = Field(default=None, max_length=64)
    since: Optional[date] = Field(default=None, description="From this day (Europe/London)")
    until: Optional[date] = Field(default=None, description="To this day, inclusive")
    # Query strings are text: these are parsed as whole numbers (a "true" is still refused).
    before: Optional[int] = Field(default=None, ge=1, le=MAX_SEQ, description="Events before this sequence number")
    after: Optional[int] = Field(default=None, ge=0, le=MAX_SEQ, description="Events after this sequence number")
    limit: int = Field(default=50, ge=1, le=500)


class EventOut(BaseModel):
    seq: int
    occurred_at: str = Field(description="UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as hashed")
    action: str
    actor: Optional[str]
    organisation: Optional[str]
    counterparty: Optional[str] = Field(description="The other organisation concerned, if any")
    subject_type: Optional[str]
    subject_id: Optional[str]
    details: dict[str, Any]
    prev_hash: str
    hash: str
    mac: str


class EventList(BaseModel):
    events: list[EventOut]
    older: Optional[int] = Field(description="Pass as `before` for the next, older page; null on the oldest")
    newer: Optional[int] = Field(description="Pass as `after` for the newer page; null on the newest")


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    head_seq: int = Field(description="The last event that verified")
    head_hash: str
    first_bad_seq: Optional[int] = Field(description="The first event that is wrong (null for a forged checkpoint)")
    problem: Optional[str] = Field(description="e.g. `hash_mismatch`, `gap`, `truncated`, `column_mismatch`")
    message: str
    checkpoint_verified: bool
    macs_checked: bool
    checkpoint_seq: Optional[int] = Field(description="The signed checkpoint compared, if any")


class CheckpointBody(BaseModel):
    seq: int
    head_hash: str
    signed_at: str
    key_id: str
    signature: str = Field(description="Ed25519, hex, over the canonical statement (see `app/audit/chain.py`)")


class CheckpointOut(BaseModel):
    checkpoint: Optional[CheckpointBody]
    public_key_pem: str
    key_id: str
    retrieved_at: datetime
