"""The pure sync algorithm: timestamps, checkpoints, traversal and dedup. No I/O lives here."""
