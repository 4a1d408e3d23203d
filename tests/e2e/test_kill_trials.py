"""Kill trials: ``modelctl pull`` of a 256 MiB model through a per-connection-capped link, SIGKILLed at 10 random
(seeded, so repeatable) moments and started again each time, then left to finish.

A moment is either a point in the layer's bytes served through the proxy (drawn uniformly, in increasing order, so
the trials fall all along the download and near its end) or, one time in five, a point in the first second after
the start (start-up, resolving the manifest, the fit check, opening the partial).
Every restart must either be killed by the test or finish with exit 0; after each kill the store is consistent and
nothing is tagged; at the end the layer hashes right and all bytes served stay within 1.3x the blob.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import oci_layout, servers
from helpers.faults import FaultProxy
from helpers.ggufs import big_blob, sha256_file
from helpers.oci_layout import OCILayout
from helpers.pulls import home, pull_command, store_is_consistent

SIZE = 256 << 20
KILLS = 10
SEED = 14
CAP = 512 << 10
"""Bytes per second per connection: 8 parts make the link ~4 MiB/s, a ~65 s download in all."""
MAX_RATIO = 1.3
RUN_TIMEOUT = 240.0


@pytest.mark.slow
def test_sigkill_at_ten_random_moments_then_resume(tmp_path: Path) -> None:
    path = tmp_path / "big.gguf"
    digest = big_blob(path, SIZE)
    layout = OCILayout(tmp_path / "layout")
    oci_layout.docker_v01_artifact(layout, "1", [path], digests={path: digest})
    rng = random.Random(SEED)
    thresholds = sorted(int(rng.uniform(0.0, 0.99) * SIZE) for _ in range(KILLS))
    early = [rng.uniform(0.05, 1.0) if rng.random() < 0.2 else None for _ in range(KILLS)]
    with servers.docker_registry(tmp_path / "registry") as registry:
        oci_layout.http_push_layout(layout, "1", registry, "ai/big:1")
        with FaultProxy(registry) as proxy:
            proxy.throttle = CAP
            ref = f"{proxy.host}/ai/big:1"
            env = dict(os.environ, MODELCTL_PARTS="8")
            for i, (moment, after) in enumerate(zip(thresholds, early, strict=True)):
                log = tmp_path / f"pull-{i}.log"
                with log.open("wb") as err:
                    proc = subprocess.Popen(pull_command(ref), env=env, stdout=subprocess.DEVNULL, stderr=err)
                started = time.monotonic()
                deadline = started + RUN_TIMEOUT
                while proc.poll() is None and time.monotonic() < deadline:
                    if after is not None and time.monotonic() - started >= after:
                        break
                    if after is None and proxy.blob_bytes(digest) >= moment:
                        break
                    time.sleep(0.02)
                if proc.poll() is not None:
                    pytest.fail(f"restart {i} ended on its own (exit {proc.returncode}): {log.read_text()}")
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(30) == -signal.SIGKILL
                assert time.monotonic() < deadline, f"restart {i} made no progress in {RUN_TIMEOUT} s"
                assert store_is_consistent() == {}, "tagged before the pull finished"
            final = subprocess.run(
                pull_command(ref), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
            )
            assert final.returncode == 0, final.stderr
            served = proxy.bytes_served()
    assert store_is_consistent() == {ref: layout.manifest_descriptor("1")["digest"]}
    blob = home() / "store" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert sha256_file(blob) == digest
    assert served <= MAX_RATIO * SIZE, f"served {served / SIZE:.3f}x the blob over {KILLS} kills"
    when = [f"{a:.2f}s" if a is not None else f"{m / SIZE:.3f}" for m, a in zip(thresholds, early, strict=True)]
    print(f"kill trials: {KILLS} kills at {when} (of the blob, or s after the start); served {served / SIZE:.3f}x")
