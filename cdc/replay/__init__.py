"""Replay: read the events of a connector back from Kafka and write the rows into PostgreSQL."""
