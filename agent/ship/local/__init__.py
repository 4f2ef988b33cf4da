"""The local-directory backend: shipping and auditing a mirror on this machine."""
