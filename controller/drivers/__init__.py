"""The real drivers: every third-party call (Docker SDK, httpx, boto3, subprocess, file I/O) lives below here.

Import the module you need (`controller.drivers.host.HostWorld`, ...): this package imports nothing, so
that importing a pure module of the controller never loads the Docker SDK or an HTTP client.
"""
