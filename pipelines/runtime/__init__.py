"""What every job runs on: the Spark session, Delta table helpers, streaming plumbing,
preflight checks and table maintenance."""
