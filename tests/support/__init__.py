"""Helpers the tests share: corpus location, hostile inputs, message builders, pool stand-ins."""
