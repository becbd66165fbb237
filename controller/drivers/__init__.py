"""Real drivers: thin adapters from the host (Docker, HTTP, files, commands) to `controller.world.World`."""

from controller.drivers.host import HostWorld

__all__ = ["HostWorld"]
