"""event: an index on occurred_at, for the console's dashboard and retention (issue 24)

The dashboard (worker.ops.dashboard.daily) counts a range of days and retention finds
the events before a date; without it both read the whole event table.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_event_occurred_at'), 'event', ['occurred_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_event_occurred_at'), table_name='event')
