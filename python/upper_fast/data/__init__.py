"""Search-log input: schema, validation, simulated marketplace, real judged data."""

__all__: list[str] = []
