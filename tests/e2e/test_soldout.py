"""The sold-out path (issues 5 and 16): once an instance has learned that a sale has nothing left,
it answers a buyer without a request_id from memory, on one Redis and on a 3-master Redis Cluster
alike. A learned sold-out is trusted for 250 ms while connected (docs/redis.md, "Sold-out fast
path"), so the worker asks Redis again at most once per 250 ms: a storm of 400 sold-out buyers
costs at most one take call per 250 ms of its length, not one per buyer (nor one per batch)."""

import math
import time

import pytest

from conftest import metric, storm

SOLDOUT_TTL_S = 0.25  # src/store_redis.c, SOLDOUT_TTL_MS


def take_calls(srv):
    """The take script calls this instance made (one per batch): seckill_redis_take_batch_size_count."""
    return int(metric(srv, "seckill_redis_take_batch_size_count"))


@pytest.mark.parametrize("store", ["redis", "redis-cluster"], indirect=True)
def test_sold_out_buyers_do_not_reach_redis(make_server, store, sale_id):
    srv = make_server(["--threads", "1"])  # one worker: one cache, so the bound below is exact
    s = sale_id()
    assert srv.put_sale(s, stock=3).status == 201
    for i in range(3):
        assert srv.take(s, user=f"winner{i}").status == 201
    # the third take's reply said "nothing left": the worker knows it from here on
    before, t0 = take_calls(srv), time.monotonic()
    res = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"late{i}"}) for i in range(400)],
                threads=16)
    elapsed = time.monotonic() - t0
    after = take_calls(srv)
    assert [st for st, _ in res] == [409] * 400, {st for st, _ in res}
    assert all(b["error"] == "sold_out" for _, b in res)
    refreshes = math.ceil(elapsed / SOLDOUT_TTL_S)
    assert after - before <= refreshes, (after - before, refreshes, elapsed)
    # a buyer with a request id may be retrying a take that won: that one is Redis's to answer
    r = srv.take(s, user="late-retry", request_id="late-retry-1")
    assert r.status == 409 and r.body["error"] == "sold_out", r
    assert take_calls(srv) > after
    # and nothing was sold past the stock
    view = srv.sale(s)
    assert (view["sold"], view["remaining"]) == (3, 0), view
