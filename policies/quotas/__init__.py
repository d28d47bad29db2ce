"""Quotas: byte-rate and request-rate meters, Kafka's quota keys, connection limits."""
