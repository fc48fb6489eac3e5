"""outbox.claimed_until: a consumer publishes its own updates; relays take what it leaves

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

A consumer that commits outbox rows publishes them itself at once and marks them
published; `claimed_until` keeps relays off those rows until then, and after it the
rows are an ordinary backlog again (that consumer died, or the broker refused). On
PostgreSQL the NOTIFY that wakes relays is now sent only for rows nobody has claimed,
so a consumer's commit no longer makes every relay look for work it will not find.
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_NOTIFY_ALL = """
    CREATE OR REPLACE FUNCTION unsubd_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('unsubd_outbox', '');
        RETURN NULL;
    END
    $$
"""


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE OR REPLACE FUNCTION unsubd_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM added WHERE claimed_until IS NULL) THEN
                PERFORM pg_notify('unsubd_outbox', '');
            END IF;
            RETURN NULL;
        END
        $$
    """)
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("CREATE TRIGGER outbox_notify AFTER INSERT ON outbox REFERENCING NEW TABLE AS added "
               "FOR EACH STATEMENT EXECUTE FUNCTION unsubd_outbox_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
        op.execute(_NOTIFY_ALL)
        op.execute("CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
                   "FOR EACH STATEMENT EXECUTE FUNCTION unsubd_outbox_notify()")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
