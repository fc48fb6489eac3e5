"""Human replies: intent, quoted history, phrase tables, auto-replies, sender trust."""
