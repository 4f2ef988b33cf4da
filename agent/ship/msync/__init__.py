"""The msync (makuosan) backend: argv, output parsing, shipping and auditing."""
