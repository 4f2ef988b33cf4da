"""Scraping a running agent's Prometheus endpoint over real HTTP on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import urllib.request

__all__ = ["free_port", "scrape", "scrape_text", "samples"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def samples(text: str) -> dict[str, float]:
    """Sample name (with its labels) -> value, from an exposition text."""
    out = {}
    for line in text.splitlines():
        if m := re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line):
            out[m.group(1)] = float(m.group(2))
    return out


def scrape(port: int) -> dict[str, float]:
    return samples(scrape_text(port))
