"""audit filter columns and their indexes

The audit workspace filters by protocol, subgroup, outcome and the second organisation an event
concerns; these columns copy values from each event's hashed details (``app.audit.indexing``) and
index them with ``seq`` for keyset pagination, the outcome also with each organisation column (a
DPO's "what was refused that concerns us" needs both). Existing events get their columns filled in, and
their details rewritten as canonical JSON text (the same JSON value, so the same hash), which is
what lets ``accord audit verify`` hash the stored text without parsing it.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-22 03:23:54.007680

"""
import json

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0004'
branch_labels = None
depends_on = None

_BATCH = 5000
_WIDTHS = {"protocol": 64, "subgroup": 64, "outcome": 32, "counterparty": 64}


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('protocol', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('subgroup', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('outcome', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('counterparty', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_audit_events_counterparty_seq', ['counterparty', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_outcome_seq', ['outcome', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_protocol_seq', ['protocol', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_subgroup_seq', ['subgroup', 'seq'], unique=False)
        batch_op.create_index('ix_audit_events_organisation_outcome_seq', ['organisation', 'outcome', 'seq'],
                              unique=False)
        batch_op.create_index('ix_audit_events_counterparty_outcome_seq', ['counterparty', 'outcome', 'seq'],
                              unique=False)
    _fill_existing_events()


def _fill_existing_events():
    """The rule of ``app.audit.indexing.indexed_values`` as it stands at this revision."""
    bind = op.get_bind()
    as_json = "CAST(:details AS JSON)" if bind.dialect.name == "postgresql" else ":details"
    update = sa.text(f"UPDATE audit_events SET details = {as_json}, protocol = :protocol, subgroup = :subgroup,"
                     " outcome = :outcome, counterparty = :counterparty WHERE seq = :seq")
    last = 0
    while True:
        rows = bind.execute(sa.text(
            "SELECT seq, subject_type, subject_id, CAST(details AS TEXT) FROM audit_events"
            " WHERE seq > :last ORDER BY seq LIMIT :batch"), {"last": last, "batch": _BATCH}).all()
        if not rows:
            return
        changes = []
        for seq, subject_type, subject_id, text in rows:
            details = json.loads(text)
            canonical = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                   allow_nan=False)
            protocol = details.get("protocol") if isinstance(details, dict) else None
            if isinstance(protocol, str):
                protocol = protocol.split(":v", 1)[0]
            elif subject_type == "protocol_version" and subject_id is not None:
                protocol = subject_id.split(":v", 1)[0]
            else:
                protocol = None
            values = {"protocol": protocol}
            for column, key in (("subgroup", "subgroup"), ("outcome", "outcome"), ("counterparty", "to_org")):
                values[column] = details.get(key) if isinstance(details, dict) else None
            for column, value in values.items():
                if not (isinstance(value, str) and len(value) <= _WIDTHS[column]):
                    values[column] = None
            changes.append({"seq": seq, "details": canonical, **values})
        bind.execute(update, changes)
        last = rows[-1][0]


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_counterparty_outcome_seq')
        batch_op.drop_index('ix_audit_events_organisation_outcome_seq')
        batch_op.drop_index('ix_audit_events_subgroup_seq')
        batch_op.drop_index('ix_audit_events_protocol_seq')
        batch_op.drop_index('ix_audit_events_outcome_seq')
        batch_op.drop_index('ix_audit_events_counterparty_seq')
        batch_op.drop_column('counterparty')
        batch_op.drop_column('outcome')
        batch_op.drop_column('subgroup')
        batch_op.drop_column('protocol')
