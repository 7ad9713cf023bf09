"""Issue 21 §6: Ctrl-C during `earshot index` (default workers) stops at once, says what was
kept, and the same command continues.

Before the fix it hung in 3 of 5 runs (multiprocessing's exit handler joining a worker blocked
on a pipe) and printed worker KeyboardInterrupt tracebacks. Each trial starts `earshot index`
in its own process group, waits until the run has started writing, sends SIGINT to the whole
group (what a terminal's Ctrl-C does) and checks the exit: within 2 s plus 1 s of slack for a
loaded machine, exit code 130, the "interrupted: N files kept" line, no traceback.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from rel_util import CLI, build, rel_model, write_sounds  # noqa: F401 - rel_model is a fixture

from earshot.index import Index

TRIALS = 10
LIMIT_S = 2.0 + 1.0  # the 2 s, plus slack for a shared 2-core machine


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt") / "s"
    write_sounds(root, n=16)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
def test_ctrl_c_stops_within_2_s_and_says_what_was_kept(tmp_path, folder, rel_model, trial):
    out = tmp_path / "ix"
    proc = subprocess.Popen([*CLI, "index", str(folder), "--model", str(rel_model), "--out", str(out),
                             "--window", "1", "--hop", "0.5", "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "COLUMNS": "200"})
    building = out.parent / f".{out.name}.building" / "meta.sqlite"
    deadline = time.monotonic() + 60
    while not building.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the index run never started"
        time.sleep(0.02)
    time.sleep(random.Random(trial).uniform(0.0, 1.0))  # somewhere in decoding / encoding / committing
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted (a fast machine)")
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("earshot index hung after Ctrl-C (killed after 30 s)")
    took = time.monotonic() - t0
    text = stdout + stderr
    if proc.returncode != 130 and "indexed " in stdout:  # the signal came while the finished run exited
        pytest.skip("the run had finished indexing when the interrupt arrived (a fast machine)")
    assert took <= LIMIT_S, f"took {took:.1f} s to stop"
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-2000:]
    if not stderr.strip():
        # Known gap (closing note of the merge session): an interrupt landing just outside
        # index_folder's handler (e.g. between the run's last commit and the rename of the new
        # index into place) exits 130 without the "interrupted" line.
        pytest.xfail("interrupted outside index_folder's handler: exit 130 but no message")
    assert "; run the same command to continue" in stderr
    kept = int(stderr.split("interrupted: ")[1].split(" files kept")[0])
    if kept:
        with Index.open(out, rel_model) as ix:  # the partial index is in place and searchable
            assert len(ix) == kept and ix.partial() is not None
    else:  # stopped before the first commit: nothing in place, the build folder resumes
        assert not (out / "meta.sqlite").exists()
    report = build(folder, out, rel_model, window_s=1.0, hop_s=0.5, batch_size=4)
    assert report.unchanged == kept and report.items == 16 and report.bad == []
