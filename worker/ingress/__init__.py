"""The listeners: SMTP, HTTP (API, unsubscribe links, preference page)."""
