"""Thin Kafka adapters: topics, the event publisher and the checkpoint store."""
