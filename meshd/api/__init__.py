"""The local HTTP API (``/v1``): the app and its routes, the request gate, the models and the server.

``app`` builds the FastAPI application over a ``NodeService``; ``guard`` is the
one gate every request passes; ``models`` are the request bodies; ``engines``,
``mesh``, ``archive`` and ``metrics`` (``GET /metrics``) add routes
(``engine_admin`` is the service behind ``/v1/engines``; ``archive`` holds the
Archivist's); ``server`` serves the app with Hypercorn's trio worker, and
``address`` records where it listens in ``<home>/api``; ``dashboard`` serves the
web dashboard's static files at ``/``.
"""
