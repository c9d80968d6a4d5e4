"""`eitmon bench durability` on a tiny configuration: a worker, valkey and the API killed
while one belt posts, and not one acknowledged frame lost."""

from __future__ import annotations

from dataclasses import replace

from worker.bench.durability import Config, SessionFigures, account, run

# A small model and grid (built once into the test cache), and a worker that takes over within
# a second and does not tune D2IP's kernels at start. valkey fsyncs before it replies, as
# deployed: under `everysec` a SIGKILL may lose a frame acknowledged just before it
# (docs/deployment.md, "Durability").
TINY = Config(sessions=1, rate=20.0, seconds=12.0, workers=1, appendfsync="always",
              geometry={"preset": "thorax-1x16", "mesh_size": 0.025}, protocol="skip4",
              grid=(4, 8, 8), stall_s=120.0,
              worker_env={"EITMON_LEASE_MS": "1000", "EITMON_LEASE_RENEW_MS": "250",
                          "EITMON_SCAN_INTERVAL_S": "0.3", "EITMON_CHECKPOINT_EVERY": "5",
                          "EITMON_DEVICE": "cpu", "EITMON_FUSED": "false"})


def test_no_acknowledged_frame_is_lost_across_sigkills() -> None:
    fig = run(TINY, progress=lambda _: None)
    assert [k.role for k in fig.kills] == ["worker", "valkey", "api"]
    assert fig.kills[0].owned == 1  # the worker killed held the session
    assert all(k.recovered_s is not None for k in fig.kills)  # taken over, reconnected
    (s,) = fig.sessions
    assert s.refused == [] and s.unexpected_duplicates == 0
    assert s.acknowledged == s.sent == int(TINY.seconds * TINY.rate)
    assert s.accepted == s.acknowledged  # each seq queued once, retries as duplicates
    assert s.missing == 0 and not any(k.missing_after.get(s.session) for k in fig.kills)
    # every frame processed, but for entries whose read reply the valkey kill swallowed: they
    # stay pending with the worker (tests/worker/runtime/test_lost_reply.py)
    assert s.reconstructed + s.coalesced + s.dropped + s.pending == s.accepted
    assert s.retries > 0  # the outages were felt
    assert s.lost == s.pending


def test_account_counts_acknowledged_frames_missing_from_the_stream_or_unprocessed() -> None:
    counters = {"accepted": 8, "duplicate": 1, "reconstructed": 5, "coalesced": 2}
    fig = SessionFigures("s")
    account(fig, counters, acked=set(range(10)), stream=[4, 5, 7, 8, 9])  # 0-3 trimmed
    assert fig.stream_first_seq == 4
    assert fig.missing == 2  # seq 6 absent from the stream; 10 acknowledged, 8 accepted
    assert fig.unprocessed == 1
    assert fig.lost == 3
    intact = SessionFigures("s")
    account(intact, {"accepted": 10, "reconstructed": 9, "dropped": 1}, set(range(10)),
            list(range(10)))
    assert (intact.missing, intact.unprocessed, intact.lost) == (0, 0, 0)


def test_without_aof_a_valkey_restart_loses_acknowledged_frames_and_the_bench_says_so() -> None:
    """The negative control: valkey restarts empty, the session is gone, and every frame it
    had acknowledged counts as lost."""
    control = replace(TINY, seconds=6.0, aof=False, kills=((0.5, "valkey"),))
    fig = run(control, progress=lambda _: None)
    (s,) = fig.sessions
    assert s.acknowledged > 0 and s.accepted == 0
    assert s.lost == s.acknowledged == fig.totals["lost"]
    assert any("404" in r for r in s.refused)  # the belt stopped: its session was gone
