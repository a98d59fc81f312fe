"""The HTTP API: routes, `POST /api/publish`, CORS and the API documents.

`common` holds what every route shares (JSON answers, the bearer token, the
catalogue's error shape); the routes take the `Node` they serve as an argument
and name it only for type checking, so nothing here imports the wiring.
"""
