"""reminder claims: the unique constraint leads with the due date, in place of its own index

A sweep reads the claims already made over a range of due dates, which needed an index on the
due date beside the unique constraint on (kind, subject type, subject id, due date, milestone);
a first sweep over a large register kept both up to date for each of its hundred thousand
claims. With the due date first, the constraint's own index serves that range and the lookups
by (due date, kind, subject) of the "what is due" page, and the second index goes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 08:45:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

UNIQUE = 'uq_reminder_claims_milestone'


def upgrade():
    # On SQLite the table is rebuilt (``migrations/env.py`` checks every reference before committing).
    with op.batch_alter_table('reminder_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reminder_claims_due_on'))
        batch_op.drop_constraint(UNIQUE, type_='unique')
        batch_op.create_unique_constraint(UNIQUE, ['due_on', 'kind', 'subject_type', 'subject_id', 'milestone'])


def downgrade():
    with op.batch_alter_table('reminder_claims', schema=None) as batch_op:
        batch_op.drop_constraint(UNIQUE, type_='unique')
        batch_op.create_unique_constraint(UNIQUE, ['kind', 'subject_type', 'subject_id', 'due_on', 'milestone'])
        batch_op.create_index(batch_op.f('ix_reminder_claims_due_on'), ['due_on'], unique=False)
