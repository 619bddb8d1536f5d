"""API routers, one module per service area."""
