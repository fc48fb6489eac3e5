"""Operators' actions: contacts import and show, review, suppressions."""
