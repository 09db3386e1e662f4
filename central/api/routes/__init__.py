"""The API's routers, one module per resource; each is thin over a library function."""
