"""prefork_proxy: the control plane (CLI, config, master/supervisor, admin, logging)."""

__version__ = "0.1.0"
