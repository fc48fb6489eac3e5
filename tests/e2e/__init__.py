"""`unsubd serve` as a subprocess, and a real browser."""
