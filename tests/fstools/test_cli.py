"""How every tool ends (fstools.common.cli.main_entry): the exit status, everything written
and every atexit handler kept, and no object-by-object teardown of the interpreter."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path
    import click
    from fstools.common.cli import main_entry, run_tool

    class Noisy:
        def __del__(self):
            sys.stderr.write("torn down\\n")

    kept = Noisy()  # freed only by an interpreter teardown

    def late(path):
        time.sleep(0.3)
        Path(path).write_text("thread done")

    @click.command()
    @click.argument("marker")
    @click.argument("status", type=int)
    @click.argument("lines", type=int)
    def cli(marker, status, lines):
        atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
        threading.Thread(target=late, args=(marker,)).start()  # not a daemon: waited for
        def body():
            for i in range(lines):
                print(f"line {i}")  # buffered: must reach the pipe at the exit
            return status
        run_tool("demo", body, False)

    main_entry(cli, "demo")
""")


def _run(tmp_path: Path, *args: str, stdout: object = subprocess.PIPE,
         **kw: object) -> subprocess.CompletedProcess:
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered
    return subprocess.run([sys.executable, str(script), *args], stdout=stdout,  # type: ignore[call-overload]
                          stderr=subprocess.PIPE, env=env, timeout=60, **kw)


def test_the_exit_keeps_the_status_the_output_threads_and_atexit_handlers(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc = _run(tmp_path, str(marker), "3", "20000")
    assert proc.returncode == 3
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 20000 and lines[-1] == "line 19999"
    assert marker.read_text() == "thread done"
    assert b"atexit ran" in proc.stderr
    # the interpreter is not torn down object by object (0.5 s after a large copy)
    assert b"torn down" not in proc.stderr


def test_usage_errors_keep_their_status(tmp_path: Path) -> None:
    proc = _run(tmp_path, str(tmp_path / "m"), "not-a-number", "1")
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("demo: Invalid value for 'STATUS'")
    assert b"Traceback" not in proc.stderr


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_a_failed_final_flush_is_one_line_and_a_failure(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as out:
        # 900 bytes: they sit in the buffer until the exit flushes them, past the limit
        proc = _run(tmp_path, str(tmp_path / "m"), "0", "100", stdout=out,
                    preexec_fn=_limit_file_size)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "demo: standard output: File too large\n" in err
    assert "Traceback" not in err


def test_a_reader_gone_is_a_failure_without_a_message(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        proc = _run(tmp_path, str(tmp_path / "m"), "0", "3", stdout=w)
    finally:
        os.close(w)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "atexit ran\n"


def test_run_command_returns_to_its_caller(tmp_path: Path, capsys) -> None:
    """run_command (what bench.profile runs a tool with) gives the status back instead of
    leaving the process: a real export's 0, a usage error's 2 with its one-line message."""
    from helpers import unpack_image

    from fstools.common.cli import run_command
    from fstools.fs2tar.__main__ import cli

    image = unpack_image("demo-ext4.img", tmp_path)
    saved = sys.argv
    try:
        sys.argv = ["fs2tar", str(image), str(tmp_path / "out.tar")]
        assert run_command(cli, "fs2tar") == 0
        assert (tmp_path / "out.tar").stat().st_size > 0
        sys.argv = ["fs2tar", "--no-such-option", str(image), str(tmp_path / "x.tar")]
        assert run_command(cli, "fs2tar") == 2
    finally:
        sys.argv = saved
    err = capsys.readouterr().err
    assert "no such option" in err.lower() and err.count("\n") == 1
