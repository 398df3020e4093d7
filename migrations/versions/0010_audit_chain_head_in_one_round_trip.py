"""audit chain: take the append lock and read the head in one round trip (PostgreSQL)

Every audited change took the chain's advisory lock in one statement and read the head in a
second, because a statement's snapshot is taken before it waits for a lock: one statement doing
both could read a head that another appender replaced while it waited. A VOLATILE function takes
a fresh snapshot for each statement it runs, so this one reads the head only once it holds the
lock, and the appender pays one round trip instead of two. SQLite needs nothing: its writing
transactions begin with BEGIN IMMEDIATE.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 22:30:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

HEAD_FUNCTION = """
CREATE FUNCTION audit_chain_head_locked(lock_key bigint) RETURNS TABLE (seq bigint, hash varchar)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY SELECT e.seq, e.hash FROM audit_events AS e ORDER BY e.seq DESC LIMIT 1;
END
$$
"""


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(HEAD_FUNCTION)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_chain_head_locked(bigint)")
