"""Edges to Kafka: producer, topics, the state topic (the only confluent_kafka users)."""
