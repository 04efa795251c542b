"""One local multi-node Ray cluster per test session (head and worker nodes are separate
processes) and small poisoned data sets stored as blobs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from sqlalchemy import update

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import Dataset, load_dataset, save_dataset, validate_arrays
from store import repository
from store.blobs import put_blob
from store.models import Audit

# n = 40 standalone set with 4 poisons: an audit of it takes ~10-30 s on two 1-CPU nodes.
SMALL = BenchmarkSpec(kind="standalone", n=40, poison_fraction=0.1, length=6, seed=3)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A head node and one worker node, 1 CPU each; the test process is the driver."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def small_dataset(spec: BenchmarkSpec = SMALL) -> Dataset:
    return validate_arrays(make_benchmark(spec))


@pytest.fixture
def queue_audit(sessions, tmp_path):
    """``queue_audit(spec, **config) -> audit id``: store the benchmark as a dataset of a new
    tenant and queue an audit of it."""

    def queue(spec: BenchmarkSpec = SMALL, **config) -> str:
        path = Path(tmp_path) / f"{uuid.uuid4().hex}.npz"
        save_dataset(path, **make_benchmark(spec))
        data = path.read_bytes()
        with sessions() as session:
            tenant = repository.get_or_create_tenant(session, f"t-{uuid.uuid4().hex[:8]}")
            summary = load_dataset(path).summary()
            uri, _ = put_blob(Path(tmp_path) / "data", summary["sha256"], data)
            dataset = repository.add_dataset(session, tenant_id=tenant.id, filename=path.name,
                                             size_bytes=len(data), uri=uri, summary=summary)
            full = AuditConfig(**{"confirm_seeds": 6, **config}).model_dump(mode="json")
            audit, _ = repository.create_audit(session, tenant_id=tenant.id, dataset_id=dataset.id, config=full)
            return audit.id

    return queue


@pytest.fixture
def empty_queue(sessions) -> None:
    """End whatever other tests left queued or running (the database is shared with the
    store tests), so the dispatcher here sees only this test's audits."""
    with sessions() as session:
        session.execute(update(Audit).where(Audit.status.in_(("queued", "running")))
                        .values(status="failed", error="ended by a test"))
        session.commit()
