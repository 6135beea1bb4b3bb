"""``rnnkit train`` under torchrun: two CPU processes (gloo) against one.

Each process takes every other sequence of each global batch and DDP averages
the gradients, with each share's loss scaled so that the average is the
one-process gradient of the whole batch. Two processes must therefore follow
the one-process run step for step, up to float rounding in the all-reduce:
same metrics, same weights, within a small tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rnnkit.cli.main import main
from rnnkit.training import load_checkpoint

# 144 training sequences in batches of 13: the last batch holds one sequence,
# so the second process's share of it is empty.
ARGS = ["train", "--limit", "200", "--hidden-size", "12", "--epochs", "2", "--batch-size", "13",
        "--lr", "0.02", "--device", "cpu", "--no-plots"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")
def test_two_processes_match_one(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, "--out", str(one)]) == 0
    capsys.readouterr()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "rnnkit", *ARGS, "--out", str(two)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy") == 1  # only rank 0 reports
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr

    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    single, double = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    for name, tensor in single.model.items():
        torch.testing.assert_close(double.model[name], tensor, rtol=1e-4, atol=1e-5)
    for a, b in zip(single.progress["history"], double.progress["history"]):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    results = [json.loads((run / "results.json").read_text()) for run in (one, two)]
    assert results[1]["test_accuracy"] == pytest.approx(results[0]["test_accuracy"], abs=1 / 30)
    assert results[1]["test_examples"] == results[0]["test_examples"]
