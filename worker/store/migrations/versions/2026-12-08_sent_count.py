"""sent_count: messages sent per day, unit and channel, reported by the sending systems (issue 24)

The complaint rate per unit (complaints / messages sent) needs the number sent; unsubd
does not send, so the sending systems report their daily counts.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sent_count',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('unit', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('reported_by', sa.String(length=100), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sent_count')),
    sa.UniqueConstraint('day', 'unit', 'channel', name=op.f('uq_sent_count_day_unit_channel'))
    )


def downgrade() -> None:
    op.drop_table('sent_count')
