"""Bounces: RFC 3464 reports, MTA text notices and their patterns, the status vocabulary, the envelope and return path, Amazon SES."""
