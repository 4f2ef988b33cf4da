"""The tree as the agent reads it: the one walker, exclude patterns, file states."""
