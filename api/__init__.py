"""The HTTP API: app factory, routes, request/response schemas."""
