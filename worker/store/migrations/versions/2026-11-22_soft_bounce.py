"""soft bounce

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('soft_bounce',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('ref', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['event.id'], name=op.f('fk_soft_bounce_event_id_event')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_soft_bounce')),
    sa.UniqueConstraint('address', 'ref', name=op.f('uq_soft_bounce_address_ref'))
    )
    with op.batch_alter_table('soft_bounce', schema=None) as batch_op:
        batch_op.create_index('ix_soft_bounce_address_occurred_at', ['address', 'occurred_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('soft_bounce', schema=None) as batch_op:
        batch_op.drop_index('ix_soft_bounce_address_occurred_at')

    op.drop_table('soft_bounce')
