"""The corral command: the argument parser, one module per command group, and the HTTP client they share."""
