"""Service plumbing of the daemon: structured logs, the shutdown watchdog, the
role supervisor, the optional Docker backend, the field checks of the
configuration records (``checks``), and the machine's inventory (``inventory``).
"""
