"""The Celery side of the benchmark: one no-op task, chained like Switchyard's `test.echo` steps.

`echo(n)` returns n + 1, so a chain of k tasks started at 0 must return k: the driver checks
every chain's value, as Switchyard's benchmark checks every workflow's `completed` event.
"""

import os

from celery import Celery

app = Celery(
    "switchyard_bench",
    broker=os.environ["CELERY_BENCH_REDIS_URL"],
    backend=os.environ["CELERY_BENCH_REDIS_URL"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="bench",
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.echo")
def echo(n):
    return n + 1
