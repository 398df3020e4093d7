"""reminder claims: one foreign key for the sweep and the audience

A claim referred to its sweep and to its audience with a foreign key each, and a first sweep
over a large register checked both for each of its hundred thousand claims (a third of a second
each on PostgreSQL). Now a sweep records the audiences it tells (``reminder_sweep_audiences``,
a few hundred rows) and each claim refers to one of them, with one foreign key for both.

Claims made before sweeps were recorded (migration 0008) had no sweep: each day's of them gets
one, so every claim now has a sweep and an audience, and both columns are required.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 08:20:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PAIR = 'fk_reminder_claims_sweep_id_reminder_sweep_audiences'
SWEEP = 'fk_reminder_claims_sweep_id_reminder_sweeps'
AUDIENCE = 'fk_reminder_claims_audience_id_reminder_audiences'
#: SQLite reflects the foreign keys migration 0008 added without their names: batch mode names
#: them by the convention they were named by, so they can be dropped by name.
NAMED = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade():
    op.create_table('reminder_sweep_audiences',
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('audience_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['audience_id'], ['reminder_audiences.id'],
                            name=op.f('fk_reminder_sweep_audiences_audience_id_reminder_audiences')),
    sa.ForeignKeyConstraint(['sweep_id'], ['reminder_sweeps.id'],
                            name=op.f('fk_reminder_sweep_audiences_sweep_id_reminder_sweeps')),
    sa.PrimaryKeyConstraint('sweep_id', 'audience_id', name=op.f('pk_reminder_sweep_audiences'))
    )
    _give_earlier_claims_their_sweeps()
    op.execute("INSERT INTO reminder_sweep_audiences (sweep_id, audience_id) "
               "SELECT DISTINCT sweep_id, audience_id FROM reminder_claims ORDER BY sweep_id, audience_id")
    # On SQLite the table is rebuilt (``migrations/env.py`` checks every reference before committing).
    with op.batch_alter_table('reminder_claims', schema=None, naming_convention=NAMED) as batch_op:
        batch_op.drop_constraint(SWEEP, type_='foreignkey')
        batch_op.drop_constraint(AUDIENCE, type_='foreignkey')
        batch_op.alter_column('sweep_id', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('audience_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(op.f(PAIR), 'reminder_sweep_audiences', ['sweep_id', 'audience_id'],
                                    ['sweep_id', 'audience_id'])


def _give_earlier_claims_their_sweeps():
    """One sweep for each day on which claims were made before sweeps were recorded, run when
    the first of them was claimed (copied in the database, so each keeps its stored form)."""
    connection = op.get_bind()
    highest = connection.execute(sa.text("SELECT coalesce(max(id), 0) FROM reminder_sweeps")).scalar_one()
    connection.execute(sa.text(
        "INSERT INTO reminder_sweeps (as_of, ran_at) SELECT as_of, min(claimed_at) FROM reminder_claims "
        "WHERE sweep_id IS NULL GROUP BY as_of ORDER BY as_of"))
    connection.execute(sa.text(
        "UPDATE reminder_claims SET sweep_id = (SELECT s.id FROM reminder_sweeps AS s "
        "WHERE s.as_of = reminder_claims.as_of AND s.id > :highest) WHERE sweep_id IS NULL"), {"highest": highest})


def downgrade():
    # The sweeps given to earlier claims stay: they are true records of when those were claimed.
    with op.batch_alter_table('reminder_claims', schema=None, naming_convention=NAMED) as batch_op:
        batch_op.drop_constraint(op.f(PAIR), type_='foreignkey')
        batch_op.alter_column('audience_id', existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column('sweep_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(AUDIENCE, 'reminder_audiences', ['audience_id'], ['id'])
        batch_op.create_foreign_key(SWEEP, 'reminder_sweeps', ['sweep_id'], ['id'])
    op.drop_table('reminder_sweep_audiences')
