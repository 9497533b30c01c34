"""Where things are kept: the database, the blob store, the catalogue, leases, upload sessions and
startup reconciliation."""
