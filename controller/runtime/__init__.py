"""runtime: how the controller runs. `options` (typed settings), `build` (the one composition root: World, store,
metrics, resolver, reconcilers), `watch` (the manager: one Docker event stream, per-kind reconcilers, one worker
per object obeying its requeue), `accessory_kind` (accessories under that manager) and `source` (the git source)."""
