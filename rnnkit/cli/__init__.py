"""The ``rnnkit`` command line: one module per subcommand."""
