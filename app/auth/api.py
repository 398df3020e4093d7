"""Users through /api/v1: everyone may see who they are; administrators manage accounts."""
from __future__ import annotations

from http import HTTPStatus

from flask_openapi3 import APIBlueprint, Tag

from app.api.auth import api_user
from app.api.errors import standard_responses
from app.auth import service
from app.auth.models import User
from app.auth.permissions import require_admin
from app.auth.schemas import UserCreate, UserList, UserOut, UserPath, UserRoles
from app.extensions import db

tag = Tag(name="Users", description="People who act for partner organisations")
api = APIBlueprint("auth_api", __name__, url_prefix="/api/v1", abp_tags=[tag],
                   abp_security=[{"bearerAuth": []}], abp_responses=standard_responses(401, 403, 422))


def user_out(user: User) -> dict:
    return UserOut(id=user.id, email=user.email, name=user.name, organisation=user.organisation.code,
                   roles=sorted(user.roles), is_enabled=user.is_enabled).model_dump(mode="json")


@api.get("/me", responses={200: UserOut})
def me():
    """The user the token acts for."""
    return user_out(api_user("read"))


@api.get("/users", responses={200: UserList})
def list_users():
    """Every user (administrators only)."""
    require_admin(api_user("read"), "list users")
    return {"users": [user_out(u) for u in service.list_users(db.session)]}


@api.post("/users", responses={201: UserOut, **standard_responses(409)})
def create_user(body: UserCreate):
    """Create a user bound to an organisation (administrators only)."""
    actor = api_user("submit")
    require_admin(actor, "create users")
    user = service.create_user(db.session, actor, email=body.email, name=body.name,
                               organisation_code=body.organisation, roles=[r.value for r in body.roles],
                               password=body.password)
    db.session.commit()
    return user_out(user), HTTPStatus.CREATED


@api.get("/users/<int:user_id>", responses={200: UserOut, **standard_responses(404)})
def get_user(path: UserPath):
    """One user (administrators only)."""
    require_admin(api_user("read"), "view users")
    return user_out(service.get_user(db.session, path.user_id))


@api.put("/users/<int:user_id>/roles", responses={200: UserOut, **standard_responses(404)})
def set_roles(path: UserPath, body: UserRoles):
    """Replace a user's roles (administrators only); their sessions end."""
    actor = api_user("submit")
    require_admin(actor, "change roles")
    user = service.get_user(db.session, path.user_id)
    service.set_roles(db.session, actor, user, [r.value for r in body.roles])
    db.session.commit()
    return user_out(user)
