"""The ``ampbridge`` subcommands, one module each; ``ampbridge.cli`` builds the parser from them."""
