"""membership: which units a contact is on, apart from consent

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Imports used to mark membership with a `(unit, *) subscribed` preference row, which
could outrank an older channel opt-out (the newest row wins). Those rows were never
anyone's consent: they move here, and the preference rows they were are removed, so
an opt-out they hid stands again.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('membership',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('contact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('unit', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=True),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], name=op.f('fk_membership_contact_id_contact')),
    sa.ForeignKeyConstraint(['event_id'], ['event.id'], name=op.f('fk_membership_event_id_event')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_membership')),
    sa.UniqueConstraint('contact_id', 'unit', name=op.f('uq_membership_contact_id_unit'))
    )
    op.execute("INSERT INTO membership (contact_id, unit, source, event_id, joined_at) "
               "SELECT contact_id, unit, 'import', event_id, changed_at FROM preference "
               "WHERE source = 'import' AND channel = '*' AND unit <> '*' AND state = 'subscribed'")
    op.execute("DELETE FROM preference WHERE source = 'import' AND channel = '*' AND unit <> '*' "
               "AND state = 'subscribed'")


def downgrade() -> None:
    op.drop_table('membership')
