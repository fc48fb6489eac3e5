"""contact.recipient_id: the sending system's id for a recipient

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipient_id', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_contact_recipient_id'), ['recipient_id'])


def downgrade() -> None:
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_contact_recipient_id'), type_='unique')
        batch_op.drop_column('recipient_id')
