"""Run `earshot` commands as forks of one warm interpreter (a test helper, not collected).

Each trial of the Ctrl-C test needs a real `earshot index` process in its own process group,
but a fresh interpreter spends seconds importing torch and the CLI before the run starts. This
server imports them once (no torch op runs here, so no thread pool is forked), then for every
request forks a child that becomes its own session leader, sends its output to the files named,
and runs the console script's ``main()`` as `earshot ARGS` would, exit handlers included.

Protocol, one JSON line each way: request ``{"argv": [...], "stdout": PATH, "stderr": PATH}``;
answers ``{"pid": N}`` at once and ``{"pid": N, "rc": CODE}`` when the child ends (CODE as
``subprocess`` reports it: negative for a signal).
"""

from __future__ import annotations

import atexit
import json
import os
import sys


def _child(request: dict) -> None:
    os.setsid()  # its own process group: the test's SIGINT to the group reaches it and its workers only
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(os.devnull)
    sys.argv = ["earshot", *request["argv"]]
    code = 0
    try:
        from earshot.app.cli import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - as the interpreter would: print it and exit 1
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what the interpreter's exit runs (multiprocessing's finalizer among them)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def serve() -> None:
    from earshot.threads import configure_openmp

    configure_openmp()  # as main() does, before torch is imported
    # the imports a real start-up pays, paid once: the commands, the indexer, the model loader
    import importlib

    from earshot.app import cli

    cli._register()
    for name in ("torch", "earshot.models.checkpoint", "earshot.models.biencoder", "earshot.loading.retriever",
                 "earshot.index.indexer", "earshot.index.encoder", "earshot.index.words", "earshot.index.integrity",
                 "earshot.index.compressed", "earshot.index.sharded", "mutagen"):
        importlib.import_module(name)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"pid": pid, "rc": rc}), flush=True)


if __name__ == "__main__":
    serve()
