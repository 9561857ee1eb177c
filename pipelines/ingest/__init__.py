"""Ingest: validate raw records against the contract, drop producer retries, and land each
record in bronze.events or bronze.quarantine."""
