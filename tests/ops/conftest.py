"""The agent-site fixture of the CLI tests, for the monitoring checks."""

from tests.cli.agent_site import sites  # noqa: F401
