"""app: one app's pass, observe -> plan -> apply. `gather` reads everything a pass needs once (`observe` and the
state); `decide` is the one pure function that turns it into a `plan.Plan`, composing `rules/` (one file a rule);
`apply` gives a plan effect and `steps/` holds the long-running steps (hooks and checks, the verification window,
image pruning); `reconcile` repeats the pass until nothing is left; `status` and `requeue` say how it ended.
`routing`, `failover`, `preview` and `gates` hold what the Nginx side, failover, preview and deploy gates mean
(constants, names, stored state), shared by the rules and the steps."""
