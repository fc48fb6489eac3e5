"""The database: engine, unit of work, models and migrations, token keys on disk. The only writer of rows."""
