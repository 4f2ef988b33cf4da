"""Agent-level errors: each carries a hint for the operator; the CLI prints
message and hint and exits 2."""

from __future__ import annotations

__all__ = ["AgentError", "ConfigError"]


class AgentError(Exception):
    """Base of every error the operator should see as a clear message."""

    hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (hint: {self.hint})" if self.hint else base


class ConfigError(AgentError):
    """The configuration is invalid; the message names the key."""

    hint = "see ops/agent.toml.example for every key and its type"
