"""Trials per second of the Ray executor with 1 and 2 worker nodes, against in-process.

Starts a local Ray cluster (a head that runs no trials, then one and two 1-CPU worker
nodes, each a separate process), builds a poisoned benchmark, and trains the same fixed set
of trials (random 80% masks, distinct seeds) three ways in one run: in this process
(``InlineExecutor``), on 1 retrainer actor, on 2. Prints trials/s and the ratios.

    python benchmarks/ray_trials.py --n 200 --trials 128
    python benchmarks/ray_trials.py --gpu          # one GPU actor against one CPU actor
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import ray
import torch
from ray.cluster_utils import Cluster

from auditor.engine import build_problem
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.executors import InlineExecutor
from auditor.trials import Trial
from workers.executor import RayExecutor
from workers.pool import RetrainerPool


def timed(executor, trials: list[Trial]) -> float:
    start = time.perf_counter()
    done = sum(len(chunk) for chunk in executor.run(trials))
    assert done == len(trials)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="training examples")
    parser.add_argument("--trials", type=int, default=128)
    parser.add_argument("--gpu", action="store_true", help="compare one GPU actor with one CPU actor")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset = validate_arrays(make_benchmark(BenchmarkSpec(kind="standalone", n=args.n, poison_fraction=0.05,
                                                           length=6, seed=0)))
    problem = build_problem(dataset, AuditConfig())
    rng = np.random.default_rng(0)
    trials = [Trial(rng.random(dataset.n) < 0.8, seed) for seed in range(args.trials)]
    results: dict[str, float] = {}

    results["inline"] = args.trials / timed(InlineExecutor(problem), trials)
    if args.gpu:
        ray.init(include_dashboard=False, log_to_driver=False)
        for label, gpus in (("1 CPU actor", 0.0), ("1 GPU actor", 1.0)):
            pool = RetrainerPool(actors=1, gpus_per_actor=gpus)
            results[label] = args.trials / timed(RayExecutor(problem, pool), trials)
            pool.shutdown()
    else:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        ray.init(address=cluster.address, log_to_driver=False)
        for workers in (1, 2):
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            pool = RetrainerPool(actors=workers)
            timed(RayExecutor(problem, pool), trials[:workers])          # actors up, data set shipped
            results[f"{workers} Ray worker{'s' * (workers > 1)}"] = args.trials / timed(RayExecutor(problem, pool),
                                                                                    trials)
            pool.shutdown()
    ray.shutdown()
    if args.json:
        print(json.dumps({"n": args.n, "trials": args.trials, "trials_per_second": results}))
        return
    base = results["inline"]
    print(f"{args.trials} trials of n = {args.n} (standalone, L = 6, normalized GD to the stopping rule)")
    for label, rate in results.items():
        print(f"  {label:<14} {rate:8.2f} trials/s   {rate / base:5.2f}x in-process")
    if "2 Ray workers" in results:
        print(f"2 workers / 1 worker: {results['2 Ray workers'] / results['1 Ray worker']:.2f}x")


if __name__ == "__main__":
    main()
