"""spec: the desired state operators commit: the `BlueGreenApp` model and its YAML loader (`app`), `kind: Accessory`
(`accessory`), `spec.resources` (`resources`), the spec directory and which apps are in force (`directory`), and
the in-place edit of a spec text used by deploy/rollback/promote (`edit`)."""
