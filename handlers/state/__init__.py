"""The consent rules, the plan (precedence, suppression, sequences) and apply, the one writer."""
