"""The device agent: capture, align, classify, assemble, and publish meter readings."""

__version__ = "0.1.0"
