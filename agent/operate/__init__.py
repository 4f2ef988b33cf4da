"""The operator's face: CLI, configuration, status, verify, replay, wait, metrics, logs."""
