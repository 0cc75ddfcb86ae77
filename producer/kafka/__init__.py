"""Thin Kafka adapters: topics, the sink (events, dead letters) and the checkpoint store."""
