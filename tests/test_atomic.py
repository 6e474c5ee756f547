"""Outputs are whole or absent: a save that is interrupted or killed leaves the old artifact or none."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_run  # noqa: E402

from advanchor.api import ErasureResult  # noqa: E402

# Rewrites a LoRA export, a UNet delta and a JSON report, each holding one version number throughout,
# for ever; prints "ready" once every file exists.
WRITER = """
import json, sys
import torch
from peft import LoraConfig
from advanchor.export import save_lora, save_unet_delta, write_atomic
from advanchor.testing import tiny_pipeline

out = sys.argv[1]
unet = tiny_pipeline().unet
unet.add_adapter(LoraConfig(r=2, target_modules=["to_k", "to_v"], init_lora_weights=False), adapter_name="a")
big = torch.nn.Linear(1024, 1024)
torch.nn.init.zeros_(big.weight)  # so that each delta is exactly its version
version = 0
while True:
    with torch.no_grad():
        for p in unet.parameters():
            p.fill_(version)
    save_lora(unet, f"{out}/lora", adapter_name="a")
    save_unet_delta(big, {"weight": big.weight - version}, f"{out}/delta.safetensors")
    write_atomic(f"{out}/report.json", json.dumps({"version": version, "pad": [version] * 200_000}))
    if version == 0:
        print("ready", flush=True)
    version += 1
"""


def check_whole(out: Path) -> None:
    """Each artifact present loads whole and holds one version throughout."""
    if (out / "lora").exists():
        lora = safetensors.torch.load_file(out / "lora" / "pytorch_lora_weights.safetensors")
        assert len(torch.cat([t.flatten() for t in lora.values()]).unique()) == 1
    if (out / "delta.safetensors").exists():
        delta = safetensors.torch.load_file(out / "delta.safetensors")["weight"]
        assert float(delta.min()) == float(delta.max())
    if (out / "report.json").exists():
        report = json.loads((out / "report.json").read_text())
        assert set(report["pad"]) == {report["version"]}


def test_kill_9_during_exports_leaves_whole_files(tmp_path):
    for kill_after in (0.05, 0.2, 0.45, 0.8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        check_whole(tmp_path)
        # Besides the artifacts, only staging names, which nothing reads: ours, which the next export clears,
        # and safetensors' own (it writes a file as .tmpXXXXXX beside it and renames it).
        staging = {"lora.tmp", "lora.old", "delta.safetensors.tmp", "report.json.tmp"}
        names = {p.name for p in tmp_path.iterdir() if not re.fullmatch(r"\.tmp\w{6,}", p.name)}
        assert names <= {"lora", "delta.safetensors", "report.json"} | staging


def test_an_interrupted_run_save_keeps_the_previous_files(tmp_path, monkeypatch):
    module, _, _, _ = tiny_run(tmp_path, trainable="lora")
    grid = Image.new("RGB", (4, 4), "white")
    ErasureResult({"run": 1}, module.pipe, module, {"grid_after": grid}).save(tmp_path / "run", config_yaml="a: 1\n")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}

    real = Path.write_bytes

    def dies_half_way(path: Path, data: bytes) -> int:
        real(path, data[: len(data) // 2])
        raise KeyboardInterrupt  # as a Ctrl-C or a kill between two writes would leave it

    monkeypatch.setattr(Path, "write_bytes", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ErasureResult({"run": 2}, module.pipe, module, {"grid_after": grid}).save(tmp_path / "run", config_yaml="b\n")
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    # The adapter and grid were rewritten whole before the interruption; the rest is the previous save's.
    lora = Path("run/lora/pytorch_lora_weights.safetensors")
    assert safetensors.torch.load(after.pop(lora)).keys() == safetensors.torch.load(before.pop(lora)).keys()
    assert after == before
