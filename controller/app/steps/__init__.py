"""steps: the long-running steps of a pass, through the World: deploy gates (hooks in one-off containers, checks),
the post-switch verification window, and image pruning."""
