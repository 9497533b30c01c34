"""Inference runner: loads GGUF blobs handed over by the registry and serves ollama/OpenAI APIs."""
