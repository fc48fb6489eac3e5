"""Spam complaints: RFC 5965 ARF and the vendor forms, believed in proportion to their proof."""
