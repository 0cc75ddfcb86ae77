"""The webhook receiver: Svix-signed AskElephant deliveries as another source of the pipeline
(docs/askelephant-api.md §5; README "Webhooks and deletes")."""
