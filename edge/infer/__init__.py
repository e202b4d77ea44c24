"""``meter-edge classify`` (the CLI in :mod:`edge.infer.cli`). The digit model itself is shared with the
bridge and lives in :mod:`meter_vision.infer`."""
