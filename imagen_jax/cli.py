"""The `imagen-jax` command. Each subcommand is a module of imagen_jax/commands/ named
after it, with `add_parser(subparsers)` and a `run(args)` function, listed in SUBCOMMANDS."""

from __future__ import annotations

import argparse
import logging
import sys

from imagen_jax import __version__

# What bad input raises in the library (StorageError, WorkdirError, ConfigMismatchError are
# ValueErrors; TrainingDivergedError a FloatingPointError; a missing optional package such as
# libtpu a ModuleNotFoundError): the command prints the one message and exits with 2.
USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    FloatingPointError,
    ModuleNotFoundError,
)

# (module path, subcommand) pairs; each module defines add_parser(subparsers) and run(args).
SUBCOMMANDS: list[tuple[str, str]] = [
    ("imagen_jax.commands.embed", "embed"),
    ("imagen_jax.commands.data", "data"),
    ("imagen_jax.commands.train", "train"),
    ("imagen_jax.commands.params", "params"),
    ("imagen_jax.commands.eval", "eval"),
    ("imagen_jax.commands.sample", "sample"),
    ("imagen_jax.commands.edit", "edit"),
    ("imagen_jax.commands.compile_check", "compile-check"),
    ("imagen_jax.commands.demo", "demo"),
]


def log_to_stderr(level: int, fmt: str = "%(asctime)s %(name)s: %(message)s") -> None:
    """Show the package's log records at `level` and above on stderr. basicConfig alone is not
    enough: importing orbax already gives the root logger a handler (absl calls basicConfig),
    which makes a later basicConfig a no-op and leaves every logger at WARNING. Records still
    propagate to the root's handler (so pytest's caplog sees them); other libraries stay at WARNING."""
    logging.basicConfig(format=fmt)
    logging.getLogger("imagen_jax").setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagen-jax", description="Imagen in JAX/Flax: train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"imagen-jax {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for module_name, _ in SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the other arguments, ["a.b=VALUE", ...]): --config.a.b=VALUE overrides (and
    "--config.a.b VALUE") collected apart from argparse, for `apply_overrides`."""
    overrides, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" not in arg and i + 1 < len(argv):
                arg, i = f"{arg}={argv[i + 1]}", i + 1
            overrides.append(arg[len("--config.") :])
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    rest, overrides = split_config_overrides(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(rest)
    if overrides and not getattr(args, "accepts_config_overrides", False):
        parser.error(f"{args.command or 'this command'} takes no --config.* overrides")
    args.config_overrides = overrides
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
        print(f"imagen-jax {command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
