# The flash-sale service that seckilld replaces, as it was deployed: Flask under
# `gunicorn -k gevent -w 4 app:app`, counting in a local Redis. Kept as it was for the
# benchmark (bench/run.sh): do not fix it. The only change is that the Redis address may
# come from REDIS_HOST / REDIS_PORT, so that the benchmark can point it at its own
# redis-server on a free port; the defaults are what production used.
import os

import redis
from flask import Flask

app = Flask(__name__)
pool = redis.ConnectionPool(host=os.environ.get("REDIS_HOST", "127.0.0.1"),
                            port=int(os.environ.get("REDIS_PORT", "6379")), db=0)
r = redis.Redis(connection_pool=pool)

KEY = "limit"
START = 95      # 100 - 5: five units left
LAST = 100      # admit while the counter is <= 100


@app.route("/limit")
def limit():
    if not r.exists(KEY):
        r.setnx(KEY, START)
    n = r.incrby(KEY, 1)
    if n <= LAST:
        return "success %d\n" % n
    return "sold out\n"
