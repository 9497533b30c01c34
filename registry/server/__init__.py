"""The composition root: builds every part from the settings, hands each handler what it uses,
and holds the one route table."""
