"""One module per ``autotune`` verb: ``add_arguments(parser)`` and ``run(args) -> exit code``."""
