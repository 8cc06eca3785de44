"""The local HTTP API (``/v1``): the app and its routes, the request gate, the models and the server.

``app`` builds the FastAPI application over a ``NodeService``; ``guard`` is the
one gate every request passes; ``models`` are the request bodies; ``engines``
and ``mesh`` add routes (``engine_admin`` is the service behind
``/v1/engines``); ``server`` serves the app with Hypercorn's trio worker.
"""
