"""JSON shapes of users for /api/v1."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from app.api.errors import MAX_ROW_ID
from app.auth.models import Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254)
    name: str = Field(min_length=1, max_length=200)
    organisation: str = Field(min_length=1, max_length=64, description="Organisation code")
    roles: list[Role] = Field(min_length=1)
    password: str = Field(min_length=12, max_length=256, description="At least 12 characters")


class UserRoles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = Field(min_length=1)


class UserPath(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: StrictInt = Field(ge=1, le=MAX_ROW_ID)


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    organisation: str
    roles: list[Role]
    is_enabled: bool


class UserList(BaseModel):
    users: list[UserOut]
