"""The corral command: the parser (main), one module per command group, and the helpers and HTTP client they share."""
