"""bluegreen-controller: converge one host's blue/green Docker app and its Nginx route to a declared state."""

__version__ = "0.1.0"
