"""Celery and Ray no-op task rates, for bench/e2e (run inside the venv it creates).

celery: the same Redis as broker and result backend (its own DB number), a worker with
Celery's defaults (prefork, one process per CPU), tasks sent one by one with delay() and
all results waited for. ray: a local Ray with one worker per CPU, tasks submitted in one
list and ray.get() on all of them. Each prints one JSON line: {"peer", "jobs", "seconds", "jobs_per_s"}.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def celery_app(url):
    from celery import Celery
    app = Celery("noop_peers", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

    @app.task(name="noop")
    def noop():
        return None

    return app, noop


def run_celery(url, jobs):
    import redis
    redis.Redis.from_url(url).flushdb()
    env = dict(os.environ, NOOP_PEERS_URL=url)
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "noop_peers:worker_app", "worker", "--loglevel", "WARNING",
                               "--without-gossip", "--without-mingle", "--without-heartbeat"],
                              cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app, noop = celery_app(url)
        # Warm up: the worker is ready once a task comes back.
        noop.delay().get(timeout=120)
        t0 = time.time()
        results = [noop.delay() for _ in range(jobs)]
        from celery.result import ResultSet
        ResultSet(results).join_native(timeout=max(600, jobs / 20))
        dt = time.time() - t0
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
    return {"peer": "celery", "jobs": jobs, "seconds": dt, "jobs_per_s": jobs / dt}


def run_ray(jobs):
    import ray
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             log_to_driver=False, logging_level="ERROR")

    @ray.remote
    def noop():
        return None

    ray.get([noop.remote() for _ in range(200)])
    t0 = time.time()
    ray.get([noop.remote() for _ in range(jobs)])
    dt = time.time() - t0
    ray.shutdown()
    return {"peer": "ray", "jobs": jobs, "seconds": dt, "jobs_per_s": jobs / dt}


if os.environ.get("NOOP_PEERS_URL"):
    worker_app, _ = celery_app(os.environ["NOOP_PEERS_URL"])

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("peer", choices=["celery", "ray"])
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--redis-url")
    a = p.parse_args()
    out = run_celery(a.redis_url, a.jobs) if a.peer == "celery" else run_ray(a.jobs)
    print(json.dumps(out), flush=True)
