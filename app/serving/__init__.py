"""The inference runtime: device placement and compiled model calls, in one place for every model."""
