"""inbound_item.claimed_by and .crashed: a dead consumer's items come back at once

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

An embedded-queue item being processed names the process that claimed it. A consumer
starting on the same machine sees that process is gone and takes its items back at
once, instead of after their lease. Items taken back this way are marked `crashed`:
they are handled one at a time, so that a crash while one is alone in flight is charged to it
(and a message that kills its consumer is still parked after max_attempts), while the
items that merely shared a crashed process's batch are not charged for it.
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbound_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('crashed', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('inbound_item', schema=None) as batch_op:
        batch_op.drop_column('crashed')
        batch_op.drop_column('claimed_by')
