"""The ``earshot`` command line. Thin: parse arguments, build configs, call library functions."""

from __future__ import annotations

import inspect

import typer

from earshot.app.root import app  # the Typer app each command module adds to


def _register() -> None:
    # Each area owns one command module; importing it adds its commands to ``app``.
    from earshot.app import cmd_data, cmd_demo, cmd_ensemble, cmd_eval, cmd_index, cmd_train, cmd_weights  # noqa: F401
    from earshot.app import cmd_classify  # noqa: F401
    from earshot.app import cmd_library  # noqa: F401
    from earshot.app import cmd_moments  # noqa: F401

    _flags_read_as_flags(app)


def _flags_read_as_flags(group: typer.Typer) -> None:
    """Give boolean options an empty metavar: typer's help otherwise prints ``--json <bool>``,
    which reads as if the flag took a value."""
    import typing

    from typer.models import OptionInfo

    callbacks = [c.callback for c in group.registered_commands]
    if group.registered_callback is not None:
        callbacks.append(group.registered_callback.callback)
    for callback in filter(None, callbacks):
        hints = typing.get_type_hints(callback)
        for name, param in inspect.signature(callback).parameters.items():
            info = param.default
            if isinstance(info, OptionInfo) and hints.get(name) in (bool, typing.Optional[bool]) \
                    and info.metavar is None:
                info.metavar = ""
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _flags_read_as_flags(sub.typer_instance)


def main() -> None:
    """Console-script entry point: earshot errors become one clear line and exit code 2."""
    import sys

    from earshot.errors import EarshotError
    from earshot.threads import configure_openmp

    _on_ctrl_c(lambda: typer.echo("interrupted: before the command started; nothing was changed", err=True))
    configure_openmp()  # before any command imports torch (see earshot.threads)
    _register()
    try:  # the root callback hands Ctrl-C back to Python as the command starts (app/root.py)
        app()
    except EarshotError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    finally:
        _quiet_ctrl_c_while_exiting()


def _quiet_ctrl_c_while_exiting() -> None:
    """The command is done: a Ctrl-C now only ends the interpreter's exit, at once and quietly.

    Without this it lands in an exit handler (multiprocessing's finalizer joining a pool's
    workers) and prints "Exception ignored in atexit callback" with a traceback."""
    _on_ctrl_c(lambda: None)


def _on_ctrl_c(say) -> None:
    """From now on a Ctrl-C calls ``say()`` (one line, or nothing) and exits 130 at once."""
    import os
    import signal
    import sys

    def leave(signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            say()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say anyway
            pass
        os._exit(130)

    signal.signal(signal.SIGINT, leave)
