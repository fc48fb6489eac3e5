"""Adapters: the listeners, the queues, the consumer, the outbox relay, the store, operators' actions and the CLI.

Only worker/app.py knows every role; nothing here decides what a message means (that is handlers/).
"""
