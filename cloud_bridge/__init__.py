"""The cloud bridge: ingest, registry, readings store, submission to billing, loyalty, fleet state."""

__version__ = "0.1.0"
