"""inbound_item: an index on lower(mail_from), for erasure and export (issue 23)

`unsubd contacts erase` and `contacts export` find the received messages sent from an
address, whatever its case; on 100,000 contacts with history each scanned every
message (bench/rights_scale.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_inbound_item_lower_mail_from', 'inbound_item', [sa.text('lower(mail_from)')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inbound_item_lower_mail_from', table_name='inbound_item')
