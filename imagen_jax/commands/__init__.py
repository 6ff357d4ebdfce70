"""The `imagen-jax` subcommands, one module each, named after its command (registered in
imagen_jax/cli.py): each defines `add_parser(subparsers)` and `run(args)` over the library."""
