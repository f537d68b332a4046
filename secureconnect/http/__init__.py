"""The HTTP pipeline: middlewares, problem responses and request helpers."""
