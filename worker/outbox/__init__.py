"""The relay that publishes committed updates from the outbox."""
