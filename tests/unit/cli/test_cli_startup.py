"""Start-up stays lean: a run registers only its own command, and a pull loads none of the machinery it does not use.

Issue 16 asks for no fixed overheads; what each run imports is checked here (in a fresh interpreter, as the console
script runs), never how long it takes: benchmarks/pull.py and benchmarks/list_startup.py measure that.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from helpers.oci_layout import TINY_MODEL_CONFIG, model_manifest

from modelctl.cli import app
from modelctl.oci import mediatypes as mt
from modelctl.oci.descriptor import Descriptor
from modelctl.store import Layout

# Runs sys.argv[1:] as the modelctl command line, then prints the modules it imported (one JSON list on stderr;
# modelctl.oci blocks httpx._main with a None entry, which is no import).
_IMPORTED = (
    "import json, sys\n"
    "from modelctl.cli.app import run\n"
    "sys.argv = ['modelctl', *sys.argv[1:]]\n"
    "try:\n"
    "    run()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "names = sorted(k for k, v in sys.modules.items() if v is not None)\n"
    "sys.stderr.write('\\nIMPORTED ' + json.dumps(names) + '\\n')\n"
    "sys.exit(code)\n"
)

NOT_FOR_PULL = (
    "modelctl.fit",  # the fit check: only for what is downloaded
    "modelctl.runtime",
    "modelctl.gguf",  # header parsing
    "modelctl.transfer.download",  # the download engine and its threads
    "modelctl.services.package",  # the manifest writer of plain-file sources
    "modelctl.cli.run",
    "modelctl.cli.serve",
    "modelctl.cli.fit",
    "modelctl.cli.models",
    "modelctl.cli.publish",
    "modelctl.cli.archive",
    "modelctl.cli.catalog",
    "modelctl.cli.system",
    "modelctl.cli.verify",
    "modelctl.cli.auth",
    "numpy",
)


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``modelctl ARGS`` in a fresh interpreter, and the modules it had imported when it finished."""
    run = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args],
        env=dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [x for x in run.stderr.splitlines() if x.startswith("IMPORTED ")]
    assert line, run.stderr
    return run, set(json.loads(line[-1].removeprefix("IMPORTED ")))


def loaded(modules: set[str], *packages: str) -> list[str]:
    """Which of ``packages`` (or modules under them) are in ``modules``."""
    return sorted(m for m in modules for p in packages if m == p or m.startswith(p + "."))


def test_each_command_name_maps_to_the_module_that_registers_it() -> None:
    for name in app.MODULES:
        probe = typer.Typer()
        importlib.import_module(f"modelctl.cli.{name}").register(probe)
        registered = {c.name for c in probe.registered_commands} | {g.name for g in probe.registered_groups}
        assert registered == {k for k, v in app.COMMANDS.items() if v == name}, name
    assert set(app.COMMANDS.values()) == set(app.MODULES)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["pull", "x"], "pull"),
        (["--debug", "pull", "x"], "pull"),
        (["--help"], None),
        (["--help", "pull"], None),  # the root's help, which lists every command
        (["--version", "pull"], None),
        (["-h"], None),
        ([], None),
        (["--", "pull"], None),
        (["pul"], "pul"),  # not a command: _register loads them all, and click suggests "pull"
    ],
)
def test_the_command_a_command_line_runs(args: list[str], command: str | None) -> None:
    assert app.command_of(args) == command


def test_pull_help_loads_only_the_pull_command(tmp_path: Path) -> None:
    run, modules = imported("pull", "--help", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert "--locked" in run.stdout
    assert "modelctl.cli.pull" in modules
    assert loaded(modules, *NOT_FOR_PULL, "modelctl.services", "modelctl.store", "httpx", "filelock") == []


def test_list_loads_no_pull_and_no_http_client(tmp_path: Path) -> None:
    run, modules = imported("list", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert "modelctl.cli.models" in modules
    assert loaded(modules, "modelctl.cli.pull", "modelctl.services.pull", "httpx", "modelctl.fit") == []


def test_root_help_still_lists_every_command(tmp_path: Path) -> None:
    run, modules = imported("--help", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    for name in {"pull", "run", "list", "registry", "save", "search", "login", "verify", "system", "fit", "ps"}:
        assert f" {name} " in run.stdout, name
    assert {f"modelctl.cli.{m}" for m in app.MODULES} <= modules


def test_a_mistyped_command_is_still_suggested(tmp_path: Path) -> None:
    run, _ = imported("pul", "x", cwd=tmp_path)

    assert run.returncode == 2
    assert "Did you mean" in run.stderr and "pull" in run.stderr


def test_a_locked_pull_of_a_present_model_loads_no_http_client_lock_fit_or_download_engine(tmp_path: Path) -> None:
    store = Layout(Path(os.environ["MODELCTL_HOME"]) / "store")
    store.ensure()
    gguf = b"GGUF" + bytes(60)
    layer = store.write_blob(gguf)
    config = store.write_blob(TINY_MODEL_CONFIG)
    manifest = model_manifest(config, len(TINY_MODEL_CONFIG), layer, len(gguf))
    digest = store.write_blob(manifest)
    store.tag("docker.io/ai/tiny:1", Descriptor(media_type=mt.OCI_MANIFEST, digest=digest, size=len(manifest)))
    lock = tmp_path / "models.lock"
    lock.write_text(json.dumps({"version": 1, "models": [{"reference": "docker.io/ai/tiny:1", "digest": digest}]}))

    run, modules = imported("pull", "--locked", str(lock), cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert digest in run.stdout
    assert "modelctl.services.pull" in modules  # it did get as far as the pull
    # rich draws the progress bars on a terminal; a pull into a pipe prints lines (typer's --help uses it)
    # nothing to write (the model is tagged already), so no lock either
    assert loaded(modules, *NOT_FOR_PULL, "httpx", "httpcore", "rich", "filelock") == []


def listed_commands(help_text: str) -> list[str]:
    """The command names of the root --help's panel, in order."""
    return re.findall(r"^│ ([a-z][a-z-]*)  ", help_text, re.MULTILINE)


def test_commands_run_one_after_another_in_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registration is per run and idempotent: a command, then the root --help with every command in the order of a
    fresh process's --help (the modules' order, not the order they were first used in)."""
    fresh, _ = imported("--help", cwd=tmp_path)

    def invoke(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["modelctl", *args])
        try:
            app.run()
        except SystemExit as exc:
            return int(exc.code or 0), capsys.readouterr().out
        raise AssertionError("run() returned without exiting")

    assert invoke("list")[0] == 0
    assert invoke("list")[0] == 0
    code, out = invoke("--help")
    assert code == 0
    assert listed_commands(out) == listed_commands(fresh.stdout)
    assert len(listed_commands(out)) == len(set(app.COMMANDS)) - 1  # every command but the hidden "ls"
    assert invoke("list")[0] == 0


def collections(entry: str, args: list[str], cwd: Path) -> int:
    """How many garbage collections ``modelctl ARGS`` ran, started through ``entry`` (``main`` or ``app.run``)."""
    counting = (
        "import atexit, gc, sys\n"
        "seen = []\n"
        "gc.callbacks.append(lambda phase, info: seen.append(info['generation']) if phase == 'start' else None)\n"
        "atexit.register(lambda: sys.stderr.write(f'\\nCOLLECTIONS {len(seen)}\\n'))\n"
        "sys.argv = ['modelctl', *sys.argv[1:]]\n"
        f"from modelctl.cli import {entry.split('.')[0]}\n"
        f"{entry}()\n"
    )
    run = subprocess.run([sys.executable, "-c", counting, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("COLLECTIONS "), run.stderr[-300:]
    return int(last.removeprefix("COLLECTIONS "))


@pytest.mark.parametrize("args", [["pull", "--help"], ["list"], ["--version"]])
def test_start_up_runs_almost_no_garbage_collection(args: list[str], tmp_path: Path) -> None:
    """The console script's main() raises the young generation's threshold: loading a command is tens of thousands of
    objects that live as long as the process, which CPython's default threshold (700) collected 50-70 times."""
    default = collections("app.run", args, tmp_path)
    tuned = collections("main", args, tmp_path)

    assert default >= 20, default  # what the threshold is for
    assert tuned <= max(2, default // 10), (tuned, default)
