"""Celery reference for `make bench`: 1-task and 3-task no-op chains, Redis as broker and result
backend, measured like Switchyard's `e2e` runs at full speed.

For each chain length it submits N chains (after a warm-up), fetches every chain's result and
checks its value, and reports chains per second from the first submit to the last result. The
worker runs in a separate process with the prefork pool and one process per core (Celery's
default concurrency). Exits 1, writing nothing, if any chain did not return its value.

Usage: python bench.py --redis-url redis://127.0.0.1:PORT/0 --chains 2000 --out celery.json
"""

import argparse
import json
import os
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warm-up", type=int, default=100)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    os.environ["CELERY_BENCH_REDIS_URL"] = args.redis_url
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import celery
    import redis
    from celery import chain
    from tasks import app, echo

    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "tasks", "worker",
            "--pool", "prefork", "--concurrency", str(args.concurrency),
            "--queues", "bench", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        cwd=here,
        env=dict(os.environ),
        # The start-up banner; warnings and errors still go to stderr.
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None:
                sys.exit(f"celery worker exited with {worker.returncode} during start-up")
            if time.monotonic() > deadline:
                sys.exit("celery worker did not answer a ping within 60 s")

        def run(steps, n):
            started = time.monotonic()
            results = []
            for _ in range(n):
                sig = chain(*([echo.s(0)] + [echo.s() for _ in range(steps - 1)]))
                results.append(sig.apply_async())
            completed = 0
            for r in results:
                if r.get(timeout=120) == steps:
                    completed += 1
            seconds = time.monotonic() - started
            return {
                "steps": steps,
                "chains": n,
                "completed": completed,
                "seconds": seconds,
                "chains_per_s": n / seconds,
            }

        runs = []
        for steps in (1, 3):
            run(steps, args.warm_up)
            r = run(steps, args.chains)
            print(
                f"celery {steps}-step: {r['chains']} chains in {r['seconds']:.2f} s, "
                f"{r['chains_per_s']:.0f}/s, {r['completed']} completed",
                flush=True,
            )
            if r["completed"] != r["chains"]:
                sys.exit(f"celery lost work: {r['completed']} of {r['chains']} {steps}-step chains completed")
            runs.append(r)

        info = redis.Redis.from_url(args.redis_url).info("server")
        result = {
            "celery_version": celery.__version__,
            "redis_version": info.get("redis_version", "unknown"),
            "concurrency": args.concurrency,
            "runs": runs,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"written to {args.out}")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    main()
