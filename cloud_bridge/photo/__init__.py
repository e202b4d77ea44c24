"""Residents' photos of their meters: reading them (`meter-bridge photo read`), taking uploads
(`upload.py`) and keeping them as readings with the photo as evidence (`store.py`)."""

PHOTO_EXTRA_HINT = "install the photo extra: pip install 'meter-reader[photo]'"
