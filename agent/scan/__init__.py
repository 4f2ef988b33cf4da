"""Scan: recovery by comparing the tree with the manifest."""
