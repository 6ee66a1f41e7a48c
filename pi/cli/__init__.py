"""The command line: `lightshow` and its subcommands."""
