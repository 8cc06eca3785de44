"""The local HTTP API (``/v1``): the app and its routes, the request gate, the models and the server.

``app`` builds the FastAPI application over a ``NodeService``; ``guard`` is the
one gate every request passes; ``models`` are the request bodies; ``engines``,
``mesh``, ``archive`` and ``metrics`` (``GET /metrics``) add routes
(``engine_admin`` is the service behind ``/v1/engines``, ``engine_registry``
publishes native uploads and lists the registry; ``archive`` holds the
Archivist's); ``task_status`` shapes a task's status documents; ``server``
serves the app with Hypercorn's trio worker, and ``address`` records where it
listens in ``<home>/api``; ``dashboard`` serves the web dashboard's static
files at ``/``.
"""
