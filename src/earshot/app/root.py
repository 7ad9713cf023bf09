"""The ``earshot`` Typer application that every command module adds its commands to (kept
apart from ``cli.py``, which imports the command modules, so no import cycle forms)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="earshot",
    help="Language-based audio retrieval: train, evaluate, ensemble and search text-to-audio "
    "systems, and search your own sound folders by text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from earshot import __version__

        typer.echo(f"earshot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Language-based audio retrieval: train, evaluate, ensemble and search text-to-audio
    systems, and search your own sound folders by text."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        # the command starts now: it gets Python's KeyboardInterrupt (training and --watch stop on
        # it; `earshot index` installs its own handling, which says what it kept), not the
        # start-up's "nothing was changed" exit (earshot.app.cli.main)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The --precision help every command that runs an audio tower shows (earshot.models.inference.PRECISIONS).
PRECISION_HELP = ("auto (bf16 on CPUs with native bf16, else fp32) | fp32 | bf16 (autocast) | bf16-weights "
                  "(CLAP/PaSST weights stored in bf16, faster) | int8 (dynamic int8 linears, CPU): the audio "
                  "tower's arithmetic.")
