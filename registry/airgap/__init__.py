"""Moving models across an air gap: push (client and /v2 writes), bundles, and importing an ollama models folder."""
