"""Issue 21 §6: Ctrl-C during `earshot index` (default workers) stops at once, says what was
kept, and the same command continues; a Ctrl-C while a finished run exits is quiet.

Before the fix it hung in 3 of 5 runs (multiprocessing's exit handler joining a worker blocked
on a pipe) and printed worker KeyboardInterrupt tracebacks; then, with a handler around the run
only, an interrupt landing in start-up, model loading or the final writes exited 130 with no
message. Each trial here is a real `earshot index` process in its own process group, forked
from one warm interpreter (:mod:`cli_forks`: a fresh interpreter would spend seconds importing
torch per trial). One uninterrupted run first measures how long a run takes on this machine
now; trial t sends SIGINT to the group (what a terminal's Ctrl-C does) at (t + 0.5) / 10 of 90 %
of that, so the ten interrupts land from start-up through model loading, decoding, encoding
and the final writes, on an idle machine as on a loaded one. Each must exit within 2 s (plus
1 s of slack for a shared 2-core machine), with code 130, the "interrupted: N files kept" line
and no traceback, leaving an index that holds exactly N whole files.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from rel_util import SR, build, rel_model, tone  # noqa: F401 - rel_model is a fixture

import earshot
from earshot.index import Index

TRIALS = 10
N_FILES = 40  # 40 files of 3 s: 200 one-second windows, a run of a few seconds
LIMIT_S = 2.0 + 1.0  # the 2 s, plus slack for a shared 2-core machine
ARGS = ["--window", "1", "--hop", "0.5", "--batch-size", "4"]  # default --workers: decoding processes
RESUMED = {0, 5, 9}  # trials that also run the same command again to the end (the others check the index)


class Forks:
    """Client of :mod:`cli_forks`: start `earshot ARGS` as a fork, wait for its exit code."""

    def __init__(self):
        src = str(Path(earshot.__file__).resolve().parents[1])
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1",
               "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_forks.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self._read(120).get("ready"), "the fork server did not start"

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)

    def start(self, argv: list[str], logs: Path) -> int:
        self.logs = logs
        request = {"argv": argv, "stdout": str(logs / "stdout"), "stderr": str(logs / "stderr")}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._read(30)["pid"]
        while True:  # the child makes itself a process-group leader first thing
            try:
                if os.getpgid(pid) == pid:
                    return pid
            except ProcessLookupError:  # already gone
                return pid
            time.sleep(0.001)

    def wait(self, pid: int, timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); SIGKILLs the group and fails the test on a hang."""
        try:
            rc = self._read(timeout)["rc"]
        except TimeoutError:
            os.killpg(pid, signal.SIGKILL)
            self._read(30)
            pytest.fail(f"earshot index hung after Ctrl-C (killed after {timeout:.0f} s)")
        return rc, (self.logs / "stdout").read_text(), (self.logs / "stderr").read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def forks():
    f = Forks()
    yield f
    f.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt") / "s"
    root.mkdir()
    for i in range(N_FILES):
        sf.write(root / f"f{i:02d}.wav", tone(150 + 37 * i, 3.0), SR)
    return root


@pytest.fixture(scope="module")
def run_s(forks, folder, rel_model, tmp_path_factory) -> float:
    """Seconds from fork to exit of one uninterrupted run on this machine now."""
    logs = tmp_path_factory.mktemp("calibrate")
    t0 = time.monotonic()
    pid = forks.start(["index", str(folder), "--model", str(rel_model), "--out", str(logs / "ix"), *ARGS], logs)
    rc, stdout, stderr = forks.wait(pid, 300)
    assert rc == 0 and f"{N_FILES} file(s) in" in stdout, stdout + stderr
    return time.monotonic() - t0


def _interrupt(forks, folder, model, tmp_path, delay: float) -> tuple[int, float, str, str]:
    pid = forks.start(["index", str(folder), "--model", str(model), "--out", str(tmp_path / "ix"), *ARGS], tmp_path)
    time.sleep(delay)
    t0 = time.monotonic()
    try:
        os.killpg(pid, signal.SIGINT)
    except ProcessLookupError:  # it had finished already
        pass
    rc, stdout, stderr = forks.wait(pid, 30)
    return rc, time.monotonic() - t0, stdout, stderr


def _finished_first(stdout: str, stderr: str) -> bool:
    """The run printed its whole summary and no "interrupted" line: nothing was left to interrupt."""
    return f"{N_FILES} file(s) in" in stdout and not any(ln.startswith("interrupted") for ln in stderr.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
def test_ctrl_c_stops_within_2_s_and_says_what_was_kept(tmp_path, forks, folder, rel_model, run_s, trial):
    delay = (trial + 0.5) / TRIALS * 0.9 * run_s
    rc, took, stdout, stderr = _interrupt(forks, folder, rel_model, tmp_path, delay)
    # the machine got faster than the measured run: the run finished (exit 0, or the Ctrl-C landed
    # after its summary was printed, between the summary and the exit): once more, earlier
    if rc == 0 or _finished_first(stdout, stderr):
        for p in (tmp_path / "ix").iterdir():
            p.unlink()
        (tmp_path / "ix").rmdir()
        rc, took, stdout, stderr = _interrupt(forks, folder, rel_model, tmp_path, delay / 2)
    text = stdout + stderr
    assert took <= LIMIT_S, f"took {took:.1f} s to stop (Ctrl-C {delay:.2f} s after the start)"
    assert rc == 130, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-2000:]
    assert "Exception ignored" not in text, text[-2000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1, text[-2000:]
    if "before the command started" in lines[0]:
        kept = 0
    else:
        assert lines[0].endswith("files kept; run the same command to continue"), lines[0]
        kept = int(lines[0].split("interrupted: ")[1].split(" files kept")[0])
    out = tmp_path / "ix"
    if kept:  # the partial index is in place and searchable, its files whole
        with Index.open(out, rel_model) as ix:
            assert len(ix) == kept and ix.partial() is not None
            assert len(ix.search("a tone", k=kept)) == kept
    else:  # stopped before the first commit: nothing in place, the build folder resumes
        assert not (out / "meta.sqlite").exists()
    if trial in RESUMED:
        report = build(folder, out, rel_model, window_s=1.0, hop_s=0.5, batch_size=4)
        assert report.unchanged == kept and report.items == N_FILES and report.bad == []


_EXIT_SIGINT = r'''
import multiprocessing.util, os, signal, sys, time
# SIGINT to this process while multiprocessing's exit handler runs its finalizers (priority 0:
# after the command returned, during the interpreter's exit)
multiprocessing.util.Finalize(None, lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(1)), exitpriority=0)
sys.argv = ["earshot", *sys.argv[1:]]
from earshot.app.cli import main
main()
'''


def test_ctrl_c_while_a_finished_run_exits_is_quiet(tmp_path, rel_model):
    """Before: "Exception ignored in atexit callback: <function _exit_function ...>" and a
    KeyboardInterrupt traceback from multiprocessing's finalizer; after: exit 130, nothing more."""
    root = tmp_path / "s"
    root.mkdir()
    sf.write(root / "a.wav", tone(440, 1.0), SR)
    src = str(Path(earshot.__file__).resolve().parents[1])
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _EXIT_SIGINT, "index", str(root), "--model", str(rel_model),
                           "--out", str(tmp_path / "ix"), "--workers", "1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert "indexed 1 new or changed file(s)" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
