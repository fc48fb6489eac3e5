"""The few named infrastructure failures. Each transport maps them to one reply:
SMTP 451, AMQP nack, HTTP 503."""


class QueueUnavailable(Exception):
    """The inbound queue could not store an item durably; the sender must retry."""


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused the transaction; retry later."""
