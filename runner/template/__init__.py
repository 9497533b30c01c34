"""Go's text/template in Python, byte-for-byte as ollama's templates render."""
