"""console_user.last_sign_in_at: when a user last signed in, for the console's users page (issue 24)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('console_user') as batch:
        batch.add_column(sa.Column('last_sign_in_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('console_user') as batch:
        batch.drop_column('last_sign_in_at')
