"""Real aiosmtpd, RabbitMQ, PostgreSQL and SQLite, in-process."""
