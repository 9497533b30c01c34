"""The runner's HTTP faces: ollama's /api inference routes and the OpenAI-compatible /v1 API."""
