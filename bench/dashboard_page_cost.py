#!/usr/bin/python3
"""What the dashboard page costs the browser (docs/dashboard.md, "A thousand sales"): N sales on
the embedded store, the page open in Debian's chromium (headless, the e2e suite's Page), then
chromium's own counters (DevTools `Performance.getMetrics`) over 10 s of snapshots: script, task
(script, layout, style, paint, parsing...) and layout time per snapshot.

    SECKILLD=$PWD/build/seckilld /usr/bin/python3 bench/dashboard_page_cost.py [N]"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import test_dashboard as td  # noqa: E402
from conftest import HOST, Server, storm  # noqa: E402

SECONDS = 10


def metrics(page):
    return {m["name"]: m["value"] for m in page.driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(f"sqlite:{tmp}/seckill.db", tmp)
        srv.start()
        try:
            res = storm(srv.admin_port, [("PUT", f"/v1/sales/k-{i:05d}", {"stock": 1000 + i}) for i in range(n)],
                        threads=16)
            assert all(r[0] == 201 for r in res), res[:3]
            page = td.Page(os.path.join(tmp, "chromium"), tmp)
            try:
                page.goto(f"http://{HOST}:{srv.admin_port}/")
                page.expect_texts({"#conn": "live"}, "the event stream")
                time.sleep(2)
                page.driver.execute_cdp_cmd("Performance.enable", {})
                m0 = metrics(page)
                time.sleep(SECONDS)
                m1 = metrics(page)
            finally:
                page.close()
        finally:
            srv.stop()
    snaps = SECONDS * 2  # one every 500 ms up to 2,000 sales
    per = {k: (m1[k] - m0[k]) * 1000 / snaps for k in ("ScriptDuration", "TaskDuration", "LayoutDuration")}
    print(f"sales={n}: per snapshot script {per['ScriptDuration']:.1f} ms, layout {per['LayoutDuration']:.1f} ms, "
          f"all tasks {per['TaskDuration']:.1f} ms; JS heap {m1['JSHeapUsedSize'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
