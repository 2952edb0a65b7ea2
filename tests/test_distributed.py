"""Several processes (uniil_lib.distributed): a 2-process gloo run on the CPU reaches the 1-process result with the
same global batch, MoE usage counters are summed over the ranks before activate-freeze, and independent runs
spread over devices give the results of one-device runs.

Tolerance of the 2-process comparison: the accuracy matrices must be equal, and the trained weights equal to 1e-4
(measured: at most 1.6e-5), except the attention key biases. Each step's gradient is the same mathematical quantity
either way (the batch mean, as a weighted sum of two half-batch means), but float32 sums it in another order, so
weights differ in the last bits. The key biases are the exception, and not a difference of results: a key bias adds
the same number to every attention logit of a query, which the softmax ignores, so its true gradient is zero and
what backpropagation computes for it is rounding noise (about 1e-10); AdamW divides by the noise's own size and
takes learning-rate-sized steps in random directions, differently in each run (measured: up to 5e-3 after nine
steps at lr 1e-3). For the same reason they change no output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uniil_lib.benchmark import run_benchmark, run_spread
from uniil_lib.distributed import World
from uniil_lib.scenarios import DatasetPart, class_incremental

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"


def launch(method: str, out: Path, processes: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(WORKER), method, str(out)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   *command[1:]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def max_difference(a: dict, b: dict) -> float:
    """The largest difference of two runs' weights, leaving out the attention key biases (module docstring)."""
    largest = 0.0
    for name in a:
        difference = np.abs(np.subtract(a[name], b[name]))
        if name.endswith("attn.in_proj_bias"):  # [query; key; value] biases
            width = len(difference) // 3
            difference = np.concatenate([difference[:width], difference[2 * width:]])
        largest = max(largest, float(difference.max()))
    return largest


def test_two_processes_reach_the_one_process_result(tmp_path):
    (alone,) = launch("finetune", tmp_path / "one", 1)
    first, second = launch("finetune", tmp_path / "two", 2)
    assert alone["world"] == 1 and first["world"] == second["world"] == 2
    assert first["weights"] == second["weights"], "the ranks' weights must stay identical"
    assert first["matrix"] == alone["matrix"], (first["matrix"], alone["matrix"])
    assert max_difference(first["weights"], alone["weights"]) < 1e-4


def test_moe_usage_is_summed_over_the_ranks_before_activate_freeze(tmp_path):
    ranks = launch("moe-adapters", tmp_path / "moe", 2)
    assert ranks[0]["usage"] == ranks[1]["usage"] and ranks[0]["frozen"] == ranks[1]["frozen"]
    assert ranks[0]["adapters"] == ranks[1]["adapters"], "experts and gates must stay identical on both ranks"
    for layer, usage in ranks[0]["usage"].items():
        summed = np.zeros_like(np.asarray(usage))
        for step in range(len(ranks[0]["local_usage"])):
            for rank in ranks:
                local = np.asarray(rank["local_usage"][step][layer])
                summed[: len(local)] += local
        assert np.array_equal(summed, usage), f"{layer}: the counters must be the sum of both ranks' counts"
        one_rank = np.asarray(ranks[0]["local_usage"][0][layer][0])
        assert one_rank.sum() < np.asarray(usage[0]).sum(), "each rank saw only part of the batch"
    for step, layers in ranks[0]["frozen"].items():
        for layer, experts in layers.items():
            counts = np.zeros(len(ranks[0]["usage"][layer][0]), dtype=np.int64)
            for rank in ranks:
                counts += np.asarray(rank["local_usage"][int(step)][layer][int(step)])
            expected = sorted(sorted(range(len(counts)), key=lambda e: (-counts[e], e))[:2])
            assert experts == expected, f"step {step}, {layer}: freeze the experts both ranks used most"


@pytest.mark.parametrize("size, expected", [(2, [[0, 1, 2], [3, 4]]), (3, [[0, 1], [2, 3], [4]]),
                                            (6, [[0], [1], [2], [3], [4], []])])
def test_each_rank_takes_a_contiguous_slice(size, expected):
    assert [World(rank, size).shard(range(5)) for rank in range(size)] == expected


def test_runs_spread_over_devices_equal_runs_on_one(squares):
    data = DatasetPart("sq", squares(4, 8, seed=0), squares(4, 4, seed=1), ("a {} square.",), "toy")
    stream = class_incremental("toy", data, increment=2, seed=0)
    options = {"profile": "fast", "model": "tiny", "progress": False}
    spread = run_spread(stream, ["zeroshot", "finetune"], seeds=[0, 1], devices=["cpu", "cpu"], **options)
    for result in spread:
        alone = run_benchmark(stream, ["zeroshot", "finetune"], seed=result["seed"], **options)
        assert list(result["methods"]) == ["zeroshot", "finetune"]
        for name in ("zeroshot", "finetune"):
            assert result["methods"][name]["matrix"] == alone["methods"][name]["matrix"], (result["seed"], name)
    assert [r["seed"] for r in spread] == [0, 1]
