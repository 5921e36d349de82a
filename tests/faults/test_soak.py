"""A short soak (the suite's version of `make soak`): subscribers dropping and resuming at
random while messages and regenerations run through two processes; 0 lost, 0 duplicated,
memory flat after warm-up."""

from __future__ import annotations

import pytest

from bench.soak import run_soak
from tests.faults.conftest import report, victim

pytestmark = pytest.mark.services

SECONDS = 20
SUBSCRIBERS = 50
# Growth allowed per process between the end of warm-up and the end of the run.
RSS_GROWTH_LIMIT_KB = 20 * 1024


async def test_short_soak_loses_and_duplicates_nothing_and_memory_stays_flat(shared_cluster):
    cluster = shared_cluster
    second = victim(cluster)  # a fresh second process (earlier tests stopped theirs)
    result = await run_soak(
        [cluster.urls[0], cluster.urls[second]],
        cluster.tokens,
        [cluster.procs[0].pid, cluster.procs[second].pid],
        seconds=SECONDS,
        subscribers=SUBSCRIBERS,
        churn_per_second=0.1,
        log=lambda line: None,
    )
    print("\n" + result.table())
    assert result.not_connected == 0
    assert result.failed_posts == 0
    assert result.events_published > 100 and result.regenerations >= 3
    assert result.churned > 0 and result.reconnects > 0
    assert (result.lost, result.duplicated, result.out_of_order) == (0, 0, 0)
    growth = result.rss_growth_kb()
    assert all(kb < RSS_GROWTH_LIMIT_KB for kb in growth.values()), growth
    report(
        "soak (short)",
        events=result.events_published,
        delivered=result.delivered,
        reconnects=result.reconnects,
        rss_growth_kb=growth,
    )
