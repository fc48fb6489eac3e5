"""The consumer: the sandboxed parser pool, classify, apply, ack."""
