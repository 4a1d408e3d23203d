"""``modelctl prune --partials``: abandoned partial downloads go, a partial a running pull holds stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

A, B, C, D = "a" * 64, "b" * 64, "c" * 64, "d" * 64


def modelctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelctl", *args], capture_output=True, text=True, timeout=120)


def test_prune_partials_keeps_what_a_pull_holds(tmp_path: Path) -> None:
    ingest = Path(os.environ["MODELCTL_HOME"]) / "ingest"
    (ingest / A).mkdir(parents=True)
    (ingest / A / "data").write_bytes(b"x" * 3000)
    (ingest / A / "state.json").write_text("{}")
    (ingest / "hf").mkdir()
    (ingest / "hf" / f"{B}.partial").write_bytes(b"y" * 1000)
    (ingest / C).mkdir()
    (ingest / C / "data").write_bytes(b"z" * 10)
    (ingest / "hf" / "not-a-digest.partial").write_bytes(b"?")  # not ours: never touched
    for hex_digest in (A, B, D):  # D: a lock file with no partial, left by a failed pull
        (ingest / f"{hex_digest}.lock").touch()

    holder = subprocess.Popen(  # a running pull of C holds its lock
        [
            sys.executable,
            "-c",
            "import filelock,sys,time; lock=filelock.FileLock(sys.argv[1]); lock.acquire(); print('held',"
            " flush=True); time.sleep(60)",
            str(ingest / f"{C}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        plain = modelctl("prune")
        assert plain.returncode == 0, plain.stderr
        assert (ingest / A).exists(), "plain prune keeps partials: they can still resume"
        result = modelctl("prune", "--partials")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    assert "removed 2 partial downloads" in result.stdout and "1 in use by a running pull" in result.stdout
    assert not (ingest / A).exists() and not (ingest / "hf" / f"{B}.partial").exists()
    assert (ingest / C / "data").exists()
    assert sorted(p.name for p in ingest.glob("*.lock")) == [f"{C}.lock"]  # only the held one's lock file stays
    assert (ingest / "hf" / "not-a-digest.partial").exists()
    df = modelctl("df", "--json")
    assert df.returncode == 0, df.stderr
    assert json.loads(df.stdout)["partial_bytes"] == 10 + 1  # C's data and the foreign file are all that is left
