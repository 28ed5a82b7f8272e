"""Subcommand groups of `export-pipeline`, discovered by the CLI.

Each module here defines ``register(subparsers)``, which adds its subcommands; each subcommand's
handler takes ``(args, settings)`` and returns an exit code, raising ``CliError`` on failure.
"""
