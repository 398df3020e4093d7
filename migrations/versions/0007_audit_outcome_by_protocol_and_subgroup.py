"""audit outcome by protocol and by subgroup

A DPO's next commonest question after "what was refused that concerns us" is "what was refused
(or referred, or shared in an emergency) under this protocol, or in this subgroup". With an index
on each column alone, a page of a rare outcome walks every event of the protocol newest first
(most of a million); with the pair indexed together with ``seq`` it reads one page of entries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 08:15:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_protocol_outcome_seq', ['protocol', 'outcome', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_subgroup_outcome_seq', ['subgroup', 'outcome', 'seq'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_subgroup_outcome_seq')
        batch_op.drop_index('ix_audit_events_protocol_outcome_seq')
