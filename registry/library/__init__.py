"""The local model library as ollama's API shows it: tags, show, copy, delete, blob uploads and create."""
