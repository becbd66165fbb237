"""store: the state dir. `state` (the one-writer lock, per-app memory, the history `Ledger`), `documents` (the typed
status.json and failover.json), `metrics` (every Prometheus metric name) and `counters` (what survives cron)."""
