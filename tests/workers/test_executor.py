"""The Ray executor on a real two-node cluster: same outcomes as in-process training, and
an audit that loses a node mid-way ends in the verdict of an undisturbed one."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.engine import build_problem, run_audit
from auditor.config import AuditConfig
from auditor.trials import Trial, run_trials
from tests.workers.conftest import small_dataset
from workers.executor import RayExecutor
from workers.pool import RetrainerPool

pytestmark = pytest.mark.timeout(600)


def test_outcomes_equal_in_process_training_of_the_same_chunks(cluster):
    dataset = small_dataset()
    problem = build_problem(dataset, AuditConfig())
    rng = np.random.default_rng(0)
    trials = [Trial(rng.random(dataset.n) < 0.8, seed) for seed in range(6)]
    pool = RetrainerPool(actors=2)
    try:
        executor = RayExecutor(problem, pool)
        chunks = list(executor.run(trials))
        assert len(chunks) == 2 and executor.trained == 6            # split over both actors
        got = {o.key: o for chunk in chunks for o in chunk}
        size = pool.chunk_size(len(trials))
        expected = [o for i in range(0, 6, size) for o in run_trials(problem, trials[i:i + size])]
        assert [got[o.key] for o in expected] == expected            # bit for bit
        assert sum(s["trained"] for s in pool.stats()) == 6
    finally:
        pool.shutdown()


def _audit(pool, dataset, config, *, on_chunk=None):
    executor = RayExecutor(build_problem(dataset, config), pool)
    stored: list[str] = []

    def store(pairs):
        stored.extend(t.key for t, _ in pairs)
        if on_chunk:
            on_chunk(len(stored))

    result = run_audit(dataset, config, executor=executor, store=store)
    return result, stored, executor


def test_losing_a_worker_node_mid_audit_keeps_the_verdict(cluster):
    dataset = small_dataset()
    config = AuditConfig(confirm_seeds=6)
    node = cluster.add_node(num_cpus=1)                  # the node to lose, in the second run
    cluster.wait_for_nodes()
    pool = RetrainerPool(actors=3)                       # one actor on each of the three 1-CPU nodes
    try:
        undisturbed, stored, _ = _audit(pool, dataset, config)
    finally:
        pool.shutdown()
    assert undisturbed.verdict.flagged, "the benchmark should give a non-empty verdict"

    pool = RetrainerPool(actors=3)
    removed = []

    def remove_after_first_chunks(done: int) -> None:
        if not removed and done >= 10:
            cluster.remove_node(node)
            removed.append(done)

    try:
        disturbed, stored_disturbed, executor = _audit(pool, dataset, config, on_chunk=remove_after_first_chunks)
    finally:
        pool.shutdown()
    assert removed, "the node was never removed"
    assert executor.retried_chunks >= 1 and pool.restarts >= 1     # a chunk really was lost and rerun
    assert disturbed.verdict.flagged == undisturbed.verdict.flagged
    assert disturbed.verdict.confirmation == undisturbed.verdict.confirmation
    assert len(stored_disturbed) == len(set(stored_disturbed)) == len(disturbed.outcomes)   # none lost or twice
    assert set(stored_disturbed) == set(stored)
