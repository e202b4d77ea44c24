"""Capture backends, one module each; every module here is imported by `open_camera` to register it."""
