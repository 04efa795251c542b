"""The retrainer actor: a long-lived Ray actor that trains chunks of trials.

One actor per GPU (or per CPU slot) holds the problems it has seen (the data set arrives
once per audit through the object store) and trains every chunk with one batched
:func:`auditor.trials.run_trials` call on its own device.
"""

from __future__ import annotations

from collections import OrderedDict

import ray

from auditor.trials import Outcome, Problem, Trial, placed_on, run_trials

PROBLEMS_KEPT = 8          # problems (audits) an actor keeps between chunks


class Retrainer:
    """Trains chunks of trials; wrapped with ``ray.remote`` by :class:`workers.pool.RetrainerPool`."""

    def __init__(self, *, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.problems: OrderedDict[str, Problem] = OrderedDict()
        self.trained = 0

    def ping(self) -> str:
        """Answer once the actor is alive; returns its device."""
        return self.device

    def train(self, problem_key: str, problem_ref: list[ray.ObjectRef], trials: list[Trial]) -> list[Outcome]:
        """Train ``trials`` of the problem behind ``problem_ref[0]`` (wrapped in a list so Ray
        passes the reference, fetched once per actor and kept by ``problem_key``)."""
        problem = self.problems.pop(problem_key, None)
        if problem is None:
            problem = placed_on(ray.get(problem_ref[0]), self.device)
        self.problems[problem_key] = problem
        while len(self.problems) > PROBLEMS_KEPT:
            self.problems.popitem(last=False)
        outcomes = run_trials(problem, trials)
        self.trained += len(trials)
        return outcomes

    def stats(self) -> dict:
        return {"device": self.device, "trained": self.trained, "problems": len(self.problems)}
