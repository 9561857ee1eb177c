"""Profiles: CRM changes, preferences, consent and erasure applied to silver.profiles in any
arrival order, with SCD2 history and an audit log."""
