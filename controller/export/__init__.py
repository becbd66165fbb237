"""`reconcile export --to argo-rollouts` (issue 20): the same specs as Kubernetes + Argo Rollouts manifests.

Pure: specs in, documents out (`argo.py`), rendered deterministically (`render.py`); `command.py` is the thin
subcommand. Imports the spec models and the spec directory loader only, never a driver. docs/export.md says
where each spec field goes (maps / approximated / no equivalent / refused).
"""
