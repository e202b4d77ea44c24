"""The wire contract between meters and the cloud bridge: topics and payloads, version 1."""
