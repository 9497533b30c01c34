"""HTTP vocabulary shared by every handler: the error dialects, JSON bodies, NDJSON streams and CORS."""
