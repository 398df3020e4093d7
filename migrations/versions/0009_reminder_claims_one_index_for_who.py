"""reminder claims: one index for who was told in which sweep

A claim's audience and sweep had an index each; every query that uses them (a user's
notifications, a digest's reminders) starts from the audience, so one index on (audience,
sweep) serves both, and a first sweep of a large register keeps one index fewer up to date for
every claim it inserts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:00:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(op.f('ix_reminder_claims_audience_sweep'), 'reminder_claims', ['audience_id', 'sweep_id'],
                    unique=False)
    op.drop_index(op.f('ix_reminder_claims_audience_id'), table_name='reminder_claims')
    op.drop_index(op.f('ix_reminder_claims_sweep_id'), table_name='reminder_claims')


def downgrade():
    op.create_index(op.f('ix_reminder_claims_sweep_id'), 'reminder_claims', ['sweep_id'], unique=False)
    op.create_index(op.f('ix_reminder_claims_audience_id'), 'reminder_claims', ['audience_id'], unique=False)
    op.drop_index(op.f('ix_reminder_claims_audience_sweep'), table_name='reminder_claims')
