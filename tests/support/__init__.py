"""Real-parts test harness: test images built FROM scratch on busybox, a private nginx, helpers.

Nothing here is a mock: tests talk to a real dockerd and a real nginx on 127.0.0.1.
"""
