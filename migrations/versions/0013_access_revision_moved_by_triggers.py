"""access revision: a counter every change to who may use the API moves, by database triggers

Each API request authenticated its token with an ORM query joining the token, its user, the
user's organisation and roles: about a fifth of the CPU of recording an exchange. The app now
keeps each token's principal in memory and reads only this counter (with the register revision)
per request; the principal is reloaded once the counter has moved. Triggers move it, in the
transaction of the change, whenever a token is revoked, re-dated or deleted, a user is renamed,
moved, disabled or deleted, a role is granted or withdrawn, or an organisation changes, so no
code path can forget to. Bookkeeping columns (a token's last use, sign-in counters) move nothing.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:45:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

#: (table, what moves the counter): the columns an API principal is built from, or every change.
WATCHED = (
    ("api_tokens", "UPDATE OF user_id, prefix, token_hash, scopes, expires_at, revoked_at", "DELETE"),
    ("users", "UPDATE OF email, name, organisation_id, is_enabled", "DELETE"),
    ("user_roles", "INSERT", "UPDATE", "DELETE"),
    ("organisations", "UPDATE", "DELETE"),
)

POSTGRES_FUNCTION = """
CREATE FUNCTION bump_access_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO access_revision (id, revision) VALUES (1, 1)
    ON CONFLICT (id) DO UPDATE SET revision = access_revision.revision + 1;
    RETURN NULL;
END
$$
"""

#: SQLite triggers fire per row and take one event each; the row is made first if it is missing.
SQLITE_BODY = ("BEGIN INSERT OR IGNORE INTO access_revision (id, revision) VALUES (1, 0); "
               "UPDATE access_revision SET revision = revision + 1 WHERE id = 1; END")


def _trigger_names():
    for table, *events in WATCHED:
        for event in events:
            yield table, event, f"{table}_{event.split()[0].lower()}_moves_access_revision"


def upgrade():
    op.create_table(
        'access_revision',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_access_revision')),
    )
    op.execute("INSERT INTO access_revision (id, revision) VALUES (1, 0)")
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(POSTGRES_FUNCTION)
    for table, event, name in _trigger_names():
        if postgres:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION bump_access_revision()")
        else:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {SQLITE_BODY}")


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, _event, name in _trigger_names():
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgres else f"DROP TRIGGER {name}")
    if postgres:
        op.execute("DROP FUNCTION bump_access_revision()")
    op.drop_table('access_revision')
