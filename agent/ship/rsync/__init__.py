"""The rsync backend: argv, exit codes, filters, shipping and auditing."""
