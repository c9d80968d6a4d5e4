"""Entry point of `eitmon worker`: settings, logging, signals, run; and its liveness check."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError

from service.contract.errors import describe_error
from worker.runtime.config import WorkerConfig

if TYPE_CHECKING:
    from worker.runtime.methods import Factory

log = logging.getLogger("eitmon.worker")


def load_config() -> WorkerConfig | None:
    """The settings from the environment; None (after a one-line error) when invalid."""
    try:
        return WorkerConfig()
    except (ValidationError, ValueError) as e:
        print(f"eitmon worker: {describe_error(e)}", file=sys.stderr)
        return None


def main(methods: Mapping[str, Factory] | None = None) -> int:
    """Run a worker until SIGTERM/SIGINT; the exit status. `methods`: name -> factory
    (default: every registered method)."""
    cfg = load_config()
    if cfg is None:
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.torch_threads:
        import torch  # the worker may import torch; the API never does

        torch.set_num_threads(cfg.torch_threads)
    from worker.runtime.loop import Worker

    redis = Redis.from_url(cfg.redis_url, socket_connect_timeout=2.0, health_check_interval=30)
    try:
        worker = Worker(cfg, redis, methods=methods)
    except RuntimeError as e:  # no reconstruction method at all
        print(f"eitmon worker: {e}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    return worker.run()


def run(methods: Mapping[str, Factory] | None = None) -> NoReturn:
    """`main()`, then end the process at once. Every session is checkpointed and released by
    then; skipping the interpreter's teardown avoids a native abort at exit ("terminate called
    without an active exception", SIGABRT, seen in about one stop in three with torch) that
    would turn a graceful stop's status 0 into -6."""
    code = main(methods)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_liveness() -> int:
    """The liveness probe: 0 when the worker's heartbeat is fresh (`health.liveness`), 1 when
    it is missing or stale or Redis cannot be asked, 2 for invalid settings."""
    from worker.runtime.health import liveness

    cfg = load_config()
    if cfg is None:
        return 2
    redis = Redis.from_url(cfg.redis_url, socket_connect_timeout=3.0, socket_timeout=3.0)
    try:
        alive, why = liveness(redis, cfg)
    except RedisError as e:
        alive, why = False, f"Redis: {type(e).__name__}"
    finally:
        redis.close()
    print(f"eitmon worker: {'alive' if alive else 'not alive'}: {why}",
          file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1
