"""cli: the command line. `main` parses and hands a built runtime to a mode; `modes` (--once, --plan, --status),
`release` (deploy, rollback, promote, maintenance), `accessories` (the accessory part of --once)."""
