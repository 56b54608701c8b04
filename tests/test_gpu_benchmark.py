"""benchmarks/gpu.py runs here on the CPU with the tiny model and prints the table it prints on a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"-?\d+\.\d+"


def test_the_gpu_benchmark_prints_every_profile_and_batch_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--tiny", "--steps", "3", "--repeats", "1",
         "--queue-jobs", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "tiny model, 64x64, 3 steps" in out
    rows = {}
    for line in out.splitlines():
        match = re.fullmatch(rf"(\w+)\s+(\d+)\s+({NUMBER})\s+({NUMBER})\s+-\s+({NUMBER})\s+({NUMBER})\s+-\s+({NUMBER})",
                             line.strip())
        if match:
            rows[match[1], int(match[2])] = [float(v) for v in match.groups()[2:]]
    assert set(rows) == {(p, b) for p in ("speed", "balanced", "low", "minimal") for b in (1, 4)}, out
    for (profile, batch), (easel, rate, hand, hand_rate, ratio) in rows.items():
        assert easel > 0 and hand > 0 and rate > 0 and hand_rate > 0, (profile, batch)
        # The ratio is of the medians, printed rounded to 3 decimals: it lies within their rounding.
        low, high = (hand - 0.0005) / (easel + 0.0005), (hand + 0.0005) / max(easel - 0.0005, 1e-9)
        assert low - 0.005 <= ratio <= high + 0.005, (profile, batch, easel, hand, ratio)
    switches = [line for line in out.splitlines() if line.startswith("switch,")]
    assert len(switches) == 4 and all("txt2img→img2img" in line and "img2img→sketch" in line for line in switches)
    idle = re.search(rf"idle between 4 queued jobs: ({NUMBER}) ms median gap, ({NUMBER}) % of busy time", out)
    assert idle and float(idle[1]) >= 0 and float(idle[2]) >= 0, out
    # The animation benchmark runs on the card too: each mode's seconds per frame and what saving adds.
    for mode in ("sweep", "zoom", "video"):
        line = re.search(rf"{mode}: ({NUMBER}) s/frame; saving 12 PNG \+ MP4 ({NUMBER}) s = ({NUMBER}) % of drawing", out)
        assert line and float(line[1]) > 0 and float(line[2]) > 0, out[-2000:]
