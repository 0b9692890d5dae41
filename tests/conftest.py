"""Suite-wide fixtures: a real single-node SLURM cluster (see ``tests/slurm_cluster.py``).

The cluster starts once per session (under pytest-xdist, as `make test` runs it: once per worker
that needs it; clusters are independent, each on its own ports and folder), on first use, and only
when a test asks for it. Where the SLURM/munge binaries are missing (a developer laptop), the tests
that need it are skipped with the reason; under CI (``CI`` set to anything but ``0``/``false``) a missing binary or a cluster that does
not come up is an error, never a skip, because `.ci/run` installs the packages.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from slurm_cluster import SlurmCluster, SlurmClusterError, require_slurm


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A started SlurmCluster shared by the whole session (torn down at its end).

    Use :func:`slurm` in tests instead, unless you manage ``SLURM_CONF`` and leftover jobs yourself.
    """
    require_slurm()
    cluster = SlurmCluster()
    try:
        cluster.start()
    except SlurmClusterError as e:  # under CI and elsewhere: the packages are there, so this is a bug
        pytest.fail(f"the test SLURM cluster did not start: {e}", pytrace=False)
    print(f"\nSLURM test cluster up in {cluster.startup_s:.2f} s ({cluster.conf})")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session cluster, with ``SLURM_CONF`` set in ``os.environ`` for the test (submitit and any
    sbatch/squeue/scontrol the test runs find the cluster) and every job cancelled afterwards, so
    that one test's leftovers cannot hold the node for the next."""
    slurm_cluster.cancel_all()
    with slurm_cluster.activate():
        yield slurm_cluster
    slurm_cluster.cancel_all()
