"""A user's PyTorch model on the Ray workers: the module lives in a folder outside the
project, reaches the workers through the job's runtime environment (``py_modules``) and
trains there to the same outcomes as in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import ray

pytestmark = pytest.mark.timeout(600)

PACKAGE = '''
import torch
from torch import nn

import auditor


class LastSteps(nn.Module):
    """An MLP on the last 6 steps (sequences of any length)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x[:, -6:, 0])


def factory(seed):
    return LastSteps()


model = auditor.TorchModel(factory, lr=0.01, steps=30)
'''

DRIVER = '''
import json, sys
import numpy as np
import ray
sys.path.insert(0, {folder!r})                       # the driver imports it from the folder
from auditor.engine import build_problem
from auditor.config import AuditConfig
from auditor.trials import Trial, run_trials
from tests.workers.conftest import small_dataset
from workers.executor import RayExecutor
from workers.pool import RetrainerPool

ray.init(address={address!r}, runtime_env={{"py_modules": [{package!r}]}}, log_to_driver=False)
dataset = small_dataset()
problem = build_problem(dataset, AuditConfig(model="byom_ray_models:model"))
rng = np.random.default_rng(0)
trials = [Trial(rng.random(dataset.n) < 0.8, seed) for seed in range(6)]
pool = RetrainerPool(actors=2)
try:
    got = {{o.key: o for chunk in RayExecutor(problem, pool).run(trials) for o in chunk}}
    size = pool.chunk_size(len(trials))
    expected = [o for i in range(0, 6, size) for o in run_trials(problem, trials[i:i + size])]
    trained = sum(s["trained"] for s in pool.stats())
finally:
    pool.shutdown()
print(json.dumps({{"type": type(problem).__name__, "trained": trained,
                  "same": [repr(got[o.key]) == repr(o) for o in expected], "errors": [o.error for o in expected]}}))
'''


def test_a_user_module_outside_the_project_trains_on_the_workers(cluster, tmp_path):
    folder = tmp_path / "user"
    package = folder / "byom_ray_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PACKAGE))

    @ray.remote(num_cpus=0)
    def importable() -> bool:
        import importlib.util

        return importlib.util.find_spec("byom_ray_models") is not None

    assert ray.get(importable.remote()) is False        # without the runtime environment the workers lack it

    script = DRIVER.format(folder=str(folder), address=cluster.address, package=str(package))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=500, env=env,
                          cwd=os.getcwd())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["type"] == "TorchProblem" and result["trained"] == 6
    assert result["same"] == [True] * 6                 # bit for bit, as in-process training of the same chunks
    assert len(set(result["errors"])) == 6
