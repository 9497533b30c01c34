"""Who may do what: corral's key, signed token requests to registries, push authorisation and TLS certificates."""
