"""Local stand-ins of the production services, started from this repository's own files:
a Kafka broker from the Maven jars. Used by `make kafka-up`, the demo and the tests."""
