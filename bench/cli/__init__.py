"""The `bench` command line: commands only; each calls into the library."""
