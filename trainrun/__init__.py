"""trainrun: the domain code shared by the API and the workers (spec, settings, database, data)."""

__version__ = "0.1.0"
