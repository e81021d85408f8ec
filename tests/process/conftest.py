"""Real clusters for the process tests: 3 troika member processes and 3 etcd 3.4 members.

Each module gets its own clusters (module scope), so a test may stop or kill members as long
as it leaves them all running again. Under pytest-xdist a module's tests may be spread over
the workers, and then each worker starts the module's clusters: ports are claimed
machine-wide by ``bench.clusters``, so they never collide. (``--dist loadgroup`` would keep a
module on one worker, but pytest-xdist 3.8 cannot group tests under pytest 9.) Member logs
stay in pytest's temporary directory and are quoted when a cluster fails to start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.clusters import EtcdCluster, TroikaCluster, etcd_available

CLUSTER_SIZE = 3


@pytest.fixture(scope="module")
def troika_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroikaCluster]:
    with TroikaCluster(CLUSTER_SIZE, tmp_path_factory.mktemp("troika")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd is not installed (.ci/run installs etcd-server and etcd-client)")
    with EtcdCluster(CLUSTER_SIZE, tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster
