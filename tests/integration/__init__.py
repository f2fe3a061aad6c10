"""Tests against a real PostgreSQL and a real Kafka broker, started once per test run."""
