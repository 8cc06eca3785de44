"""Service plumbing of the daemon: structured logs, the shutdown watchdog, the
role supervisor and the optional Docker backend.
"""
