"""msync-agent: watch a tree, journal every change, ship it to every mirror."""

__version__ = "0.1.0"
