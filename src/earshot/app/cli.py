"""The ``earshot`` command line. Thin: parse arguments, build configs, call library functions."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="earshot",
    help="Language-based audio retrieval: train, evaluate, ensemble and search text-to-audio "
    "systems, and search your own sound folders by text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each area owns one command module; importing it adds its commands to ``app``.
    from earshot.app import cmd_data, cmd_demo, cmd_ensemble, cmd_eval, cmd_index, cmd_train, cmd_weights  # noqa: F401


def main() -> None:
    """Console-script entry point: earshot errors become one clear line and exit code 2."""
    import sys

    from earshot.errors import EarshotError
    from earshot.threads import configure_openmp

    configure_openmp()  # before any command imports torch (see earshot.threads)
    _register()
    try:
        app()
    except EarshotError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(2)
