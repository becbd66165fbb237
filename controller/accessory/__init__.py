"""accessory: `kind: Accessory` (Redis, MongoDB, Qdrant beside the colors): the pure planner (`plan`) and the passes
that apply it (`reconcile`), with the app's requeue contract."""
