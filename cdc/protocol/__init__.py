"""The sans-IO core: replication framing, pgoutput decoding, value conversion.

Nothing in this package does I/O, logs, reads a clock, or imports psycopg or
confluent_kafka: it turns bytes into typed values and back, and is tested on bytes.
"""
