"""Pipeline helpers: the logic behind the DVC stages (notebooks stay thin)."""
