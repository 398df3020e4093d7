"""reminder audiences, sweeps and e-mail digests

A sweep used to write one e-mail per recipient per reminder and one notification per user per
reminder: a first sweep over a large register wrote four rows for every reminder it claimed.
Now each claim names its audience (who is told, kept as it was), e-mail goes out as one digest
per address per sweep, and a notification row is made only when a user acknowledges or snoozes
a reminder. Existing claims get the audience their e-mails and notifications already name.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:40:00.000000

"""
import hashlib
import json

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def _fingerprint(emails, user_ids):
    """As ``app.reminders.bulk.fingerprint`` computes it (copied: a migration must not change)."""
    text = json.dumps({"emails": list(emails), "users": list(user_ids)}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def upgrade():
    op.create_table('reminder_sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('ran_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder_sweeps'))
    )
    op.create_table('reminder_audiences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reminder_audiences')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_reminder_audiences_fingerprint'))
    )
    op.create_table('reminder_audience_members',
    sa.Column('audience_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['audience_id'], ['reminder_audiences.id'],
                            name=op.f('fk_reminder_audience_members_audience_id_reminder_audiences')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reminder_audience_members_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('audience_id', 'position', name=op.f('pk_reminder_audience_members'))
    )
    with op.batch_alter_table('reminder_audience_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reminder_audience_members_user_id'), ['user_id'], unique=False)

    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with a foreign key in place; batch mode would rebuild the table, and
        # dropping the old copy fails while outbox messages and notifications refer to its rows.
        for table, column, target in (("reminder_claims", "sweep_id", "reminder_sweeps"),
                                      ("reminder_claims", "audience_id", "reminder_audiences"),
                                      ("outbox_messages", "sweep_id", "reminder_sweeps")):
            op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER "
                       f"CONSTRAINT fk_{table}_{column}_{target} REFERENCES {target} (id)")
    else:
        op.add_column('reminder_claims', sa.Column('sweep_id', sa.Integer(), nullable=True))
        op.add_column('reminder_claims', sa.Column('audience_id', sa.Integer(), nullable=True))
        op.add_column('outbox_messages', sa.Column('sweep_id', sa.Integer(), nullable=True))
        op.create_foreign_key(op.f('fk_reminder_claims_sweep_id_reminder_sweeps'), 'reminder_claims',
                              'reminder_sweeps', ['sweep_id'], ['id'])
        op.create_foreign_key(op.f('fk_reminder_claims_audience_id_reminder_audiences'), 'reminder_claims',
                              'reminder_audiences', ['audience_id'], ['id'])
        op.create_foreign_key(op.f('fk_outbox_messages_sweep_id_reminder_sweeps'), 'outbox_messages',
                              'reminder_sweeps', ['sweep_id'], ['id'])
    op.create_index(op.f('ix_reminder_claims_sweep_id'), 'reminder_claims', ['sweep_id'], unique=False)
    op.create_index(op.f('ix_reminder_claims_audience_id'), 'reminder_claims', ['audience_id'], unique=False)
    op.create_index(op.f('ix_outbox_messages_sweep_id'), 'outbox_messages', ['sweep_id'], unique=False)

    _give_existing_claims_their_audiences()


def _give_existing_claims_their_audiences():
    """Each claim's audience is who its e-mails and notifications were for, in the order written."""
    connection = op.get_bind()
    emails, users = {}, {}
    for claim_id, address in connection.execute(sa.text(
            "SELECT claim_id, to_address FROM outbox_messages WHERE claim_id IS NOT NULL ORDER BY id")):
        emails.setdefault(claim_id, [])
        if address not in emails[claim_id]:
            emails[claim_id].append(address)
    for claim_id, user_id in connection.execute(sa.text(
            "SELECT claim_id, user_id FROM notifications ORDER BY id")):
        users.setdefault(claim_id, []).append(user_id)
    audiences = {}
    for (claim_id,) in connection.execute(sa.text("SELECT id FROM reminder_claims ORDER BY id")).all():
        members = (tuple(emails.get(claim_id, ())), tuple(users.get(claim_id, ())))
        if members not in audiences:
            fingerprint = _fingerprint(*members)
            connection.execute(sa.text("INSERT INTO reminder_audiences (fingerprint, created_at) "
                                       "VALUES (:fingerprint, CURRENT_TIMESTAMP)"), {"fingerprint": fingerprint})
            audience_id = connection.execute(sa.text("SELECT id FROM reminder_audiences WHERE fingerprint = :f"),
                                             {"f": fingerprint}).scalar_one()
            rows = [{"audience": audience_id, "position": position, "email": email, "user": None}
                    for position, email in enumerate(members[0])]
            rows += [{"audience": audience_id, "position": len(members[0]) + position, "email": None, "user": user}
                     for position, user in enumerate(members[1])]
            if rows:
                connection.execute(sa.text("INSERT INTO reminder_audience_members (audience_id, position, email, "
                                           "user_id) VALUES (:audience, :position, :email, :user)"), rows)
            audiences[members] = audience_id
        connection.execute(sa.text("UPDATE reminder_claims SET audience_id = :audience WHERE id = :id"),
                           {"audience": audiences[members], "id": claim_id})


def downgrade():
    # Digests have no single claim to be written from: they go, with the audiences and sweeps, and
    # reminders claimed since then are no longer shown to users who had not acted on them.
    op.execute("DELETE FROM outbox_messages WHERE sweep_id IS NOT NULL")
    op.drop_index(op.f('ix_outbox_messages_sweep_id'), table_name='outbox_messages')
    op.drop_index(op.f('ix_reminder_claims_audience_id'), table_name='reminder_claims')
    op.drop_index(op.f('ix_reminder_claims_sweep_id'), table_name='reminder_claims')
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, columns in (("outbox_messages", ("sweep_id",)), ("reminder_claims", ("audience_id", "sweep_id"))):
        # On SQLite the table is rebuilt without the columns, and their foreign keys with them.
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                if not sqlite:
                    target = "reminder_audiences" if column == "audience_id" else "reminder_sweeps"
                    batch_op.drop_constraint(f"fk_{table}_{column}_{target}", type_='foreignkey')
                batch_op.drop_column(column)
    with op.batch_alter_table('reminder_audience_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reminder_audience_members_user_id'))
    op.drop_table('reminder_audience_members')
    op.drop_table('reminder_audiences')
    op.drop_table('reminder_sweeps')
