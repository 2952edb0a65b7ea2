"""Would notebook 08 fit its budget better on two worker processes? Time and memory of its training cell, two ways.

    .venv/bin/python benchmarks/notebook08_two_workers.py [--json docs/measurements/notebook08_two_workers.json]

**Why.** Notebook 08's training cell (the fast profile's five Uni-IL steps, four methods, 3 epochs) runs the methods
one after another in the kernel, at the CPU profiles' one torch thread, so the second core of a 2-core machine
(Binder, CI) idles. The benchmark CLI's ``--devices cpu,cpu`` already spreads methods over two worker processes, one
thread each. The notebook's budget is 3 minutes *and* 2 GB, so the question is whether the time saved is worth the
memory of a second process.

**What it does.** Builds the notebook's stream (``uniil-offline``, ``prefix(5)``, seed 0) once, then runs its four
methods (a) with :func:`uniil_lib.benchmark.run_benchmark` in this process, as the notebook does, and (b) with
:func:`uniil_lib.benchmark.run_spread` on ``["cpu", "cpu"]`` (3 epochs given per method through ``method_train``),
in the order given by ``--order``. For each: wall seconds, the peak over time of the summed *proportional* set size
(PSS) of this process and its children, sampled every 0.2 s (PSS counts a shared library page once across the
processes that map it, as a container's memory limit does; summed RSS would count torch's libraries once per
worker), and every method's metrics. Both ways must give identical metrics (one thread per process either way).

Run it on an otherwise idle machine: it is itself two torch processes in (b).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil

from uniil_lib.benchmark import run_benchmark, run_spread
from uniil_lib.named_scenarios import build_scenario
from uniil_lib.profiles import get_profile
from uniil_lib.threads import choose_threads

METHODS = ("zeroshot", "finetune", "moe-adapters-ddas", "mage")  # notebook 08's training cell
STEPS, EPOCHS, SEED = 5, 3, 0


def fast_stream_and_profile(scenario: str = "uniil-offline", *, steps: int | None = STEPS, epochs: int | None = EPOCHS,
                            seed: int = SEED):
    """A named scenario's stream, cut to its first ``steps`` steps (None: all), and the fast profile at ``epochs``
    epochs (None: the profile's own). The defaults are notebook 08's training cell: ``uniil-offline``'s first five
    steps, seed 0, 3 epochs."""
    profile = get_profile("fast")
    stream = build_scenario(scenario, profile=profile, seed=seed)
    if steps is not None:
        stream = stream.prefix(steps)
    if epochs is not None:
        profile = replace(profile, train=replace(profile.train, epochs=epochs))
    return stream, profile


def tree_pss_bytes() -> int:
    """Summed proportional set size of this process and all its children (0 for one that ended meanwhile)."""
    total = 0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def measured(work) -> tuple[dict, float, float]:
    """``work()``'s result, its wall seconds and the peak summed PSS (GiB) sampled while it ran."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss_bytes())
            done.wait(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        result = work()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return result, seconds, peak[0] / 2**30


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--order", default="one,spread", help="which ways, in this order (default one,spread)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    ways = args.order.split(",")
    if not ways or any(way not in ("one", "spread") for way in ways):
        parser.error(f"--order takes 'one' and/or 'spread' joined by ',', got {args.order!r}")
    choose_threads("fast")
    stream, three_epochs = fast_stream_and_profile()
    rows = {}
    for way in ways:
        with tempfile.TemporaryDirectory(prefix="uniil-nb08-") as checkpoints:
            if way == "one":
                result, seconds, gib = measured(lambda: run_benchmark(
                    stream, METHODS, profile=three_epochs, seed=SEED, checkpoint_root=checkpoints, progress=False))
            else:
                result, seconds, gib = measured(lambda: run_spread(
                    stream, METHODS, seeds=[SEED], devices=["cpu", "cpu"], profile="fast", checkpoint_root=checkpoints,
                    method_train={name: {"epochs": EPOCHS} for name in METHODS}, progress=False)[0])
        rows[way] = {"seconds": round(seconds, 1), "peak_pss_gib": round(gib, 3),
                     "metrics": {name: entry["metrics"] for name, entry in result["methods"].items()}}
        print(f"{way:7s} {seconds:7.1f} s  peak summed PSS {gib:.2f} GiB", flush=True)
    record = {"methods": list(METHODS), "steps": STEPS, "epochs": EPOCHS, "seed": SEED, "cpu_cores": psutil.cpu_count(),
              "measured": time.strftime("%Y-%m-%d", time.gmtime()), "ways": rows}
    if len(rows) == 2:
        record["identical_metrics"] = rows["one"]["metrics"] == rows["spread"]["metrics"]
        record["time_ratio_one_over_spread"] = round(rows["one"]["seconds"] / rows["spread"]["seconds"], 3)
        print("identical metrics:", record["identical_metrics"], "| time ratio one / spread:",
              record["time_ratio_one_over_spread"])
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
