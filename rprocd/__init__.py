"""rprocd: the RPMsg host, in user space."""

__version__ = "0.1.0"
