"""Edges to PostgreSQL: replication, catalog, snapshot reads, signals (the only psycopg users)."""
