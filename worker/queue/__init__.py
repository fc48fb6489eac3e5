"""The inbound queue: embedded (SQLite/PostgreSQL table) and RabbitMQ, and parked items."""
