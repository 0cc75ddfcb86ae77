"""The staged pipeline of one sync run (see docs/architecture.md):

    Source ──► SyncRun ──► EventBuilder ──► RunSink ──► Kafka

`ports` holds the small typed interfaces the orchestrator (`producer.service`) depends on;
`build` and `dead_letters` are pure; the Kafka and httpx adapters live in `producer.kafka`
and `producer.api`.
"""
