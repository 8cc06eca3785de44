"""Service plumbing of the daemon: structured logs, the shutdown watchdog, the
role supervisor, the optional Docker backend, and the field checks of the
configuration records (``checks``).
"""
