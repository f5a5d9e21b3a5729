"""The model store: `models/<name>/<version>/` folders, each with `model.keras` and `manifest.json`."""
