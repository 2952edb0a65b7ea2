"""One small continual run in one of several processes, for tests/test_distributed.py.

    python tests/distributed_worker.py METHOD OUT_DIR               # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py METHOD OUT_DIR

Trains METHOD on the squares stream (two class-incremental steps) with the tiny CLIP, batch 8, under the process
group torchrun set up (gloo on the CPU), and writes ``OUT_DIR/rank<r>.json``: the accuracy matrix, the trained
weights, and for MoE methods the expert-usage counters, this rank's own counts of each step (before the ranks'
counts are summed) and the experts activate-freeze froze.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest's squares
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's uniil_lib

from conftest import colour_squares  # noqa: E402

from uniil_lib import distributed  # noqa: E402
from uniil_lib.adapters import AdapterConfig  # noqa: E402
from uniil_lib.clip import TinyClipConfig, load_clip  # noqa: E402
from uniil_lib.methods import TrainConfig, create_method  # noqa: E402
from uniil_lib.methods.adapter import AdapterTuning  # noqa: E402
from uniil_lib.scenarios import DatasetPart, class_incremental  # noqa: E402
from uniil_lib.train import run_continual  # noqa: E402

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=2,
                       text_width=32, text_layers=2, heads=2, context_length=16)


def record_local_usage(log: list) -> None:
    """Keep this rank's usage counts of each step, before :meth:`AdapterTuning._sum_usage_over_ranks` adds the
    others' (what the test compares the summed counters with)."""
    original = AdapterTuning._sum_usage_over_ranks

    def recording(self, before):
        log.append({layer.name: (layer.usage[: len(before[layer.name])] - before[layer.name]).tolist()
                    for layer in self.adapters.moe_layers()})
        original(self, before)

    AdapterTuning._sum_usage_over_ranks = recording


def main(method_name: str, out_dir: Path) -> None:
    world = distributed.init_from_environment("cpu")
    data = DatasetPart("sq", colour_squares(4, 10, seed=0), colour_squares(4, 6, seed=1), ("a {} square.",), "toy")
    stream = class_incremental("toy", data, increment=2, seed=0)
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-3, seed=0, progress=False)
    options = {}
    if method_name.startswith("moe"):
        options["adapters"] = AdapterConfig(num_experts=4, top_k=2, bottleneck=8, image_blocks=1, text_blocks=1)
    method = create_method(method_name, load_clip("tiny", tiny_config=SMALL, seed=0), stream, config, **options)
    local_usage: list = []
    record_local_usage(local_usage)
    result = run_continual(method, stream)
    record = {"world": world.size, "matrix": result.matrix.tolist(),
              "weights": {name: p.detach().flatten().tolist() for name, p in method.clip.model.named_parameters()
                          if p.requires_grad}}
    if method_name.startswith("moe"):
        record["usage"] = {layer.name: layer.usage.tolist() for layer in method.adapters.moe_layers()}
        record["local_usage"] = local_usage
        record["frozen"] = {str(step): layers for step, layers in method.frozen_log.items()}
        record["adapters"] = {k: v.flatten().tolist() for k, v in method.adapters.state_dict().items()
                              if v.is_floating_point()}
    (out_dir / f"rank{world.rank}.json").write_text(json.dumps(record), encoding="utf-8")
    distributed.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1], Path(sys.argv[2]))
