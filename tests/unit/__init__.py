"""Pure tests: parsers, classify on the corpus, plan and rules. No services."""
