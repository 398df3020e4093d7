"""The JSON API under /api/v1: token authentication, the error envelope and the OpenAPI document."""
