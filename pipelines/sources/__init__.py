"""Where records come from: the landing folder, Kafka, Kinesis, and bronze.events for the
jobs downstream of ingest."""
