"""The `prodigy` command line: one module per command group, errors caught once in `main`."""
