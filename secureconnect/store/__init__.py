"""Storage services: SQL database, cache with fallback, pub/sub bus, Cassandra."""
