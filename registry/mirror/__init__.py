"""The pull-through mirror: upstream access, single-flight fills, the manifest cache, content
sources and the /v2 reads."""
