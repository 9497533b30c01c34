"""Pure vocabulary of models: names, digests, manifests, Modelfiles and GGUF headers; no I/O beyond reading a file."""
