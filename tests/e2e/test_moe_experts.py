"""Experts kept in host memory (``--n-cpu-moe``) reach the real llama.cpp: a tiny MoE GGUF (written here, random
weights) loads with the runtime's expert overrides and answers exactly as without them, llama.cpp's own buffer log
shows the experts left its CPU_REPACK copy where the extra buffers are off (``auto`` on AMX CPUs), and the fit
estimate of the host's weights equals what llama.cpp reports either way.

Without a GPU nothing is offloaded, so this checks the override mechanism (patterns, buffer type, order), not the
GPU-side savings; those are unit-tested (tests/unit/fit/test_fit_moe.py) and compared with published logs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from helpers.moe_gguf import tiny_moe

from modelctl import cpu, gguf
from modelctl.fit.estimate import estimate
from modelctl.fit.settings import RunSettings

ROOT = Path(__file__).resolve().parents[2]
BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size\s*=\s*([\d.]+) MiB")
MIB = 1 << 20

LOAD = """
import json, sys
from pathlib import Path
import llama_cpp
from modelctl import cpu
from modelctl.runtime import engine
from modelctl.runtime.buffers import applied

path, n_cpu_moe = Path(sys.argv[1]), int(sys.argv[2])
with applied(cpu.weight_buffers("auto", cpu.features()), [path], n_cpu_moe):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_gpu_layers=0, verbose=True)
text = llm.create_completion([1, 3, 4, 5], max_tokens=6, temperature=0)["choices"][0]["text"]
llm.close()
# run's own path: every layer "offloaded" (none is, without a GPU) with the plan's experts in RAM
spec = engine.LoadSpec(model_path=path, n_ctx=256, n_gpu_layers=-1, n_cpu_moe=n_cpu_moe, files=(path,))
loaded = engine.load(spec)
print(json.dumps({"text": text, "n_ctx": loaded.n_ctx}))
loaded.close()
"""


def _load(path: Path, n_cpu_moe: int) -> tuple[dict[str, object], dict[str, float]]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(path), str(n_cpu_moe)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first_load = result.stderr.split("llama_model_loader: loaded meta data")[1]  # the overrides of `applied`
    return json.loads(result.stdout.strip().splitlines()[-1]), {
        name: float(size) for name, size in BUFFER.findall(first_load)
    }


def test_a_tiny_moe_loads_and_answers_with_its_experts_kept_on_the_host(tmp_path: Path) -> None:
    path = tiny_moe(tmp_path / "tiny-moe.gguf")
    header = gguf.read_header(gguf.FileSource(path))
    choice = cpu.weight_buffers("auto", cpu.features())
    whole, whole_buffers = _load(path, 0)
    kept, kept_buffers = _load(path, 2)
    assert kept["text"] == whole["text"] and kept["n_ctx"] == whole["n_ctx"] == 256
    for n_cpu_moe, logged in ((0, whole_buffers), (2, kept_buffers)):
        predicted = estimate(header, RunSettings(n_ctx=256, n_cpu_moe=n_cpu_moe), buffers=choice).cpu.weights / MIB
        assert abs(predicted - sum(logged.values())) <= 0.02, (n_cpu_moe, logged, predicted)
    if choice.repack_by_override:  # auto on an AMX CPU (this project's machine): the experts left CPU_REPACK
        experts = sum(t.n_bytes for t in header.tensors if "_exps" in t.name) / MIB
        assert whole_buffers["CPU_REPACK"] - kept_buffers["CPU_REPACK"] >= 0.99 * experts
        assert "AMX" not in kept_buffers and "AMX" not in whole_buffers
