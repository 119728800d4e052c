"""Database layer: typed tables, engine/session factories and the queries both sides use."""
