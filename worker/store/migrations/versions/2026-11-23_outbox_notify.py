"""PostgreSQL: the outbox itself announces new rows (NOTIFY unsubd_outbox)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

A statement trigger on outbox sends the notification that wakes relays in other
processes, delivered at COMMIT like any NOTIFY. Every writer of outbox rows is covered,
and a decision's transaction no longer spends a round trip on it. SQLite has no
NOTIFY: nothing to do there.
"""

from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION unsubd_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('unsubd_outbox', '');
            RETURN NULL;
        END
        $$
    """)
    op.execute("CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
               "FOR EACH STATEMENT EXECUTE FUNCTION unsubd_outbox_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS unsubd_outbox_notify()")
