"""JSON shapes of transfers for /api/v1. The payload itself is never JSON: it travels as the raw
request or response body."""
from __future__ import annotations

from copy import deepcopy
from datetime import datetime
from functools import cache
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from app.api.errors import MAX_ROW_ID
from app.transfers.rules import TransferStatus

TransferId = Field(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$",
                   description="The transfer's id, a random UUID")


class TransferPath(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transfer_id: str = TransferId


class UploadHeaders(BaseModel):
    """The upload's own headers; every other header of the request is ignored, not refused."""

    model_config = ConfigDict(extra="ignore")

    filename: Optional[str] = Field(default=None, alias="X-Accord-Filename", max_length=1000,
                                    description="The file name, percent-encoded UTF-8 (or use Content-Disposition)")
    sha256: Optional[str] = Field(default=None, alias="X-Content-SHA256", pattern=r"^[0-9a-fA-F]{64}$",
                                  description="The SHA-256 of the file in hex, checked once it has arrived: a body "
                                              "that does not match is refused and nothing is stored")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # flask-openapi3 asks for the schema on every upload, to look up the fields' types: built
        # once, not every time (it was a twentieth of an upload's CPU). A copy, so no caller can
        # change what the next one gets.
        return deepcopy(_json_schema(cls, args, tuple(sorted(kwargs.items()))))


@cache
def _json_schema(model: type[BaseModel], args: tuple, kwargs: tuple) -> dict[str, Any]:
    return BaseModel.model_json_schema.__func__(model, *args, **dict(kwargs))


class TransferQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    box: Optional[Literal["inbox", "outbox"]] = Field(
        default=None, description="inbox: received by your organisation; outbox: sent by it; omit for both")
    status: Optional[TransferStatus] = None
    # Query strings are text: these are parsed as whole numbers (a "true" is still refused).
    exchange_id: Optional[int] = Field(default=None, ge=1, le=MAX_ROW_ID)
    limit: int = Field(default=50, ge=1, le=200)


class DownloadOut(BaseModel):
    downloaded_by: str = Field(description="E-mail of the person who downloaded it")
    downloaded_at: datetime
    bytes: int


class TransferOut(BaseModel):
    """A transfer's metadata: what both organisations see. The payload is at `.../payload`."""

    id: str
    exchange_id: int
    status: TransferStatus = Field(description="sent, downloaded, destroyed, or destruction_unconfirmed (destroyed, "
                                               "and the recipient has not confirmed destroying its copies within "
                                               "7 days)")
    from_org: str
    to_org: str
    sent_by: str = Field(description="E-mail of the sender")
    filename: str
    media_type: str
    size: int = Field(description="Plaintext size in bytes")
    sha256: str = Field(description="Lower-case hex SHA-256 of the plaintext, checked on every download")
    created_at: datetime
    retention_until: datetime = Field(description="When Accord destroys the payload")
    destroyed_at: Optional[datetime]
    destruction_method: Optional[str]
    destruction_confirmation: Literal["not_due", "not_needed", "pending", "overdue", "confirmed"] = Field(
        description="Whether the recipient has confirmed destroying its copies after destruction")
    destruction_confirmed_by: Optional[str]
    destruction_confirmed_at: Optional[datetime]
    downloads: list[DownloadOut]
    payload_available: bool = Field(description="Whether you may download the payload now")


class TransferList(BaseModel):
    transfers: list[TransferOut]
