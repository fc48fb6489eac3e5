"""The MIME and header toolkit every reader uses: parsing with limits, addresses, From."""
