"""The runtime's pieces on their own: state encoding, checkpoint files, reference, policy, the
intake's recovery of pending entries."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import redis
import torch

from service.contract.codecs import FrameEntry, encode_close, encode_frame, text
from service.contract.keys import WORKER_GROUP, frames_key
from service.contract.session import METHODS, SessionConfig
from worker.forward.model import ForwardModel
from worker.recon.base import available_methods
from worker.runtime import checkpoint, state_codec
from worker.runtime.intake import Intake, Taken, take
from worker.runtime.lease import Lease
from worker.runtime.quality_window import QualityWindow
from worker.runtime.reference import ProtocolMismatch, Reference, check_model
from worker.runtime.session import Close, Session


def test_every_method_the_api_accepts_is_registered() -> None:
    # the API (no torch) validates `method` against its own list; the worker must know each one
    assert set(METHODS) <= set(available_methods())


def test_the_breath_policy_builds_the_main_method_with_its_tidal_options(
        small_model: ForwardModel) -> None:
    from worker.runtime.methods import MethodTable, registered, registered_tidal

    table = MethodTable(registered(), "cpu", registered_tidal())
    frame_by_frame = table.build("edip", small_model)
    tidal = table.build("edip", small_model, tidal=True)
    assert frame_by_frame.settings["tpp"] and not tidal.settings["tpp"]
    assert table.build("d2ip", small_model, tidal=True).settings["schedule"] == "adaptive"
    assert table.build("d2ip", small_model).settings["schedule"] == "paper"
    injected = MethodTable({"d2ip": registered()["d2ip"]}, "cpu")  # tests' own tables: none
    assert injected.build("d2ip", small_model, tidal=True).settings["schedule"] == "paper"


def test_state_codec_round_trips_without_pickles() -> None:
    state = {"weights": torch.arange(6.0).reshape(2, 3), 0: {"step": 3, "exp_avg": torch.ones(2)},
             "z": np.linspace(0, 1, 4, dtype=np.float32), "seed": np.int64(7),
             "shape": (16, 32, 32), "history": [1.5, None, "x"], "nan": float("nan")}
    tree, arrays = state_codec.encode(state)
    back = state_codec.decode(tree, arrays)
    assert torch.equal(back["weights"], state["weights"]) and back[0]["step"] == 3
    assert torch.equal(back[0]["exp_avg"], torch.ones(2))
    np.testing.assert_array_equal(back["z"], state["z"])
    assert back["seed"] == 7 and back["shape"] == (16, 32, 32)
    assert back["history"] == [1.5, None, "x"] and np.isnan(back["nan"])
    with pytest.raises(TypeError, match="pickling"):
        state_codec.encode({"f": lambda: 0})


def test_checkpoint_write_read_prune(tmp_path: Path) -> None:
    sid = "a" * 32
    make = {"sid": sid, "main_method": "d2ip", "reference": np.arange(3.0),
            "main_state": {"w": torch.zeros(2)}}
    old = checkpoint.write(tmp_path, checkpoint.Checkpoint(epoch=1, stream_id="5-0", **make))
    new = checkpoint.write(tmp_path, checkpoint.Checkpoint(epoch=2, stream_id="9-1",
                                                           counters={"accepted": 9}, **make))
    got = checkpoint.read(tmp_path, new)
    assert (got.epoch, got.stream_id, got.counters) == (2, "9-1", {"accepted": 9})
    np.testing.assert_array_equal(got.reference, np.arange(3.0))
    checkpoint.prune(tmp_path, new)
    assert not (tmp_path / old).exists() and (tmp_path / new).exists()
    assert [p.name for p in checkpoint.session_dirs(tmp_path)] == [sid]
    assert not list((tmp_path / sid).glob(".*"))


def test_checkpoint_write_is_durable_and_prune_spares_writes_in_progress(
        tmp_path: Path, fsynced: list[str]) -> None:
    """A checkpoint goes through `storage.write_atomic` (file and folder fsynced); `prune`
    leaves the temporary file of a concurrent write alone."""
    sid = "c" * 32
    name = checkpoint.write(tmp_path, checkpoint.Checkpoint(
        sid=sid, epoch=1, stream_id="1-0", main_method="tikhonov", main_state={}, reference=None))
    assert fsynced == ["file", "folder"]
    in_progress = tmp_path / sid / f".{name.split('/')[1]}.abc123.npz"
    in_progress.write_bytes(b"PK partial")
    checkpoint.prune(tmp_path, name)
    assert in_progress.exists() and (tmp_path / name).exists()


def test_first_n_reference_averages_then_explicit_replaces() -> None:
    ref = Reference({"mode": "first_n", "frames": 2})
    ref.observe(np.array([1.0, 3.0]))
    assert not ref.ready
    ref.observe(np.array([3.0, 5.0]))
    ref.observe(np.array([9.0, 9.0]))  # after N frames: ignored
    np.testing.assert_array_equal(ref.value, [2.0, 4.0])
    ref.set(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(ref.value, [1.0, 1.0])


def test_the_reference_check_refuses_a_flipped_sign_and_warns_on_a_weak_match(
        small_model: ForwardModel) -> None:
    v0 = small_model.reference_voltages
    assert check_model(v0, small_model).verdict == "ok"
    with pytest.raises(ProtocolMismatch, match="current sign and the electrode order"):
        check_model(-v0, small_model)
    # a reference drowned in channel noise: r about 1 / sqrt(1 + 1.5**2) = 0.55
    noisy = v0 + 1.5 * v0.std() * np.random.default_rng(3).standard_normal(v0.shape)
    weak = check_model(noisy, small_model)
    assert weak.verdict == "warn" and 0 < weak.overall < 0.8
    live = QualityWindow(window=8, every=8)
    for k in range(8):
        live.observe(v0, k)
    summary = live.summary(live.report(small_model.protocol), weak)
    assert summary.model_correlation == round(weak.overall, 4)
    assert summary.warnings == [weak.message] and "electrode order" in weak.message


def session(model: ForwardModel, realtime: str, reference: dict[str, Any]) -> Session:
    cfg = SessionConfig(geometry={}, protocol={}, grid=model.grid.shape, method="tikhonov",
                        reference=reference, realtime=realtime, n_electrodes=16,
                        n_measurements=model.n_measurements)
    return Session(lease=Lease("b" * 32, "w", 1), config=cfg, model=model, preview=None,
                   preview_method="tikhonov", main=None, main_method="tikhonov",
                   reference=Reference(reference), position=checkpoint.START)


def frame(v: float, m: int, seq: int) -> FrameEntry:
    return FrameEntry("frame", seq=seq, timestamp=seq * 0.05,
                      voltages=np.full(m, v, dtype=np.float32))


def test_frames_wait_for_the_first_n_reference_then_all_are_queued(
        small_model: ForwardModel) -> None:
    s = session(small_model, "complete", {"mode": "first_n", "frames": 3})
    m = small_model.n_measurements
    assert s.accept("1-0", frame(1.0, m, 0)) == [] and s.accept("2-0", frame(2.0, m, 1)) == []
    ready = s.accept("3-0", frame(3.0, m, 2))
    assert [f.seq for f in ready] == [0, 1, 2]
    np.testing.assert_allclose(ready[0].dv, -0.5)  # (1 - 2) / |2|
    s.queue(ready)
    assert [s.take().item.seq for _ in range(3)] == [0, 1, 2]  # complete: one at a time


def test_realtime_takes_the_newest_and_coalesces_the_rest(small_model: ForwardModel) -> None:
    s = session(small_model, "realtime", {"mode": "explicit"})
    m = small_model.n_measurements
    s.accept("1-0", FrameEntry("reference", voltages=np.ones(m, dtype=np.float32)))
    silent = [s.accept(f"{k}-1", frame(1.0, m, k), silent=True)[0] for k in range(2, 5)]
    fresh = [s.accept(f"{k}-1", frame(1.0, m, k))[0] for k in range(5, 9)]
    s.queue(silent + fresh)
    s.queue(s.accept("9-0", FrameEntry("close")))
    replay = s.take()
    assert [f.seq for f in replay.replay] == [4] and replay.item is None
    work = s.take()
    assert [f.seq for f in work.coalesce] == [5, 6, 7] and work.item.seq == 8
    assert s.take().item == Close("9-0") and s.take() is None


def test_a_close_read_with_the_last_frames_comes_after_them(small_model: ForwardModel) -> None:
    s = session(small_model, "complete", {"mode": "first_n", "frames": 1})
    m = small_model.n_measurements
    entries = [(f"{k}-0", encode_frame(k, k * 0.05, np.full(m, 1.0 + k, np.float32)))
               for k in range(1, 4)]
    taken = take(s, [*entries, ("4-0", encode_close())])  # one XREADGROUP reply
    s.queue(taken.ready)  # as `Previews.publish` does after publishing the previews
    assert [s.take().item.seq for _ in range(3)] == [1, 2, 3]
    assert s.take().item == Close("4-0") and s.take() is None


class Owner:
    """A registry that owns every session."""

    def owns(self, session: Session) -> bool:
        return True


class Published(list[Taken]):
    """Previews that only record what they are given."""

    def publish(self, batch: list[Taken]) -> None:
        self.extend(batch)


def test_recovery_takes_each_pending_entry_never_taken_once(
        redis_url: str, small_model: ForwardModel) -> None:
    """The intake's recovery takes the entries pending in the group that the session did not
    take (a read whose reply was lost, a fenced-out worker's read), each once, and forgets the
    acknowledged ones."""
    client = redis.Redis.from_url(redis_url)
    s = session(small_model, "complete", {"mode": "first_n", "frames": 1})
    key, m = frames_key(s.sid), small_model.n_measurements
    client.xgroup_create(key, WORKER_GROUP, id="0", mkstream=True)
    ids = [text(client.xadd(key, encode_frame(k, k * 0.05, np.full(m, 1.0 + k, np.float32))))
           for k in range(5)]
    take(s, client.xreadgroup(WORKER_GROUP, "w", {key: ">"}, count=2)[0][1])  # its own read
    client.xreadgroup(WORKER_GROUP, "w", {key: ">"}, count=2)  # its read whose reply was lost
    client.xreadgroup(WORKER_GROUP, "w0", {key: ">"}, count=1)  # a fenced-out worker's read
    published = Published()
    intake = Intake(client, "w", 64, 1.0, cast(Any, Owner()), cast(Any, published),
                    cast(Any, None), threading.Event())
    intake.recover([s])
    assert [frame.seq for taken in published for frame in taken.ready] == [2, 3, 4]
    client.xack(key, WORKER_GROUP, ids[0])
    intake.recover([s])  # nothing left to take
    assert len(published) == 1 and s.taken == set(ids[1:])
    pending = client.xpending_range(key, WORKER_GROUP, "-", "+", 10)
    assert {text(row["consumer"]) for row in pending} == {"w"}
    client.close()


def test_the_live_window_checks_drift_over_its_seconds() -> None:
    """The live report's drift check covers the frames of the last `drift_seconds` (by
    timestamp), more than its 32-frame window; a timestamp that goes back starts anew."""
    from tests.worker.devices.test_quality import PROTOCOL, RATE, drifting

    _, drift = drifting(electrode=6)
    live = QualityWindow(window=32, every=32, drift_seconds=30.0)
    for k, volts in enumerate(drift):
        live.observe(volts, k, k / RATE)
    report = live.report(PROTOCOL)
    assert report.flagged == [6] and report.flags[6] == ["drift"]
    summary = live.summary(report)
    assert summary.bad_electrodes == [7] and summary.flags == {"7": ["drift"]}
    assert summary.frames == 32 and report.drift is not None
    assert report.drift.seconds == pytest.approx(199 / RATE)
    live.observe(drift[-1], 200, 0.0)  # the clock went back: the stretch starts again
    assert len(live.stretch) == 1 and live.report(PROTOCOL).drift is None
    short = QualityWindow(window=32, every=32, drift_seconds=3.0)
    for k, volts in enumerate(drift):
        short.observe(volts, k, k / RATE)
    assert len(short.stretch) == 61  # 3 s at 20 frames/s, both ends
