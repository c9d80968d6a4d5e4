"""`eitmon demo`: the whole monitor on this machine, with a simulated patient.

Starts an embedded valkey (unless REDIS_URL is set), the API with a random secret, one worker,
and a belt replaying a simulated `tidal-breathing` recording at 20 frames/s (simulated once,
then cached); prints the viewer's address and a viewer token. The belt's token and the
viewer's are bound to the demo's session, as in a deployment. The session is opened first, so
that the worker builds the forward model while the recording is simulated; the recording's
reference is then set as the session's explicit reference. The default model is coarser than
the service default (mesh 16 mm, 12 x 24 x 24 voxels) to keep the cold start short. Ctrl-C
stops everything in order: belt, session close, worker (checkpoint), API, valkey.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

DEMO_GEOMETRY = "thorax-2x16"


def demo_settings(grid: tuple[int, int, int], mesh_size: float) -> dict[str, Any]:
    """The session's geometry, protocol and grid."""
    return {"geometry": {"preset": DEMO_GEOMETRY, "mesh_size": mesh_size}, "protocol": "skip4",
            "grid": list(grid)}


def demo_recording(settings: dict[str, Any], duration: float) -> Path:
    """The simulated tidal-breathing recording for these settings, from the cache or made now."""
    from worker import storage

    key = storage.content_key({**settings, "duration": duration}, 16)
    path = storage.cache_dir() / "demo" / f"tidal-breathing-{key}.npz"
    if path.is_file():
        return path
    from worker.simulation import simulate

    typer.echo("simulating tidal breathing on a fine mesh (first run only) ...", err=True)
    rec = simulate("tidal-breathing", duration=duration, with_truth=False, progress=True,
                   **settings)
    storage.write_atomic(path, rec.save)
    return path


def demo(
    port: Annotated[int, typer.Option(help="API and viewer port on 127.0.0.1")] = 8000,
    rate: Annotated[float, typer.Option(help="belt frames per second")] = 20.0,
    grid: Annotated[tuple[int, int, int], typer.Option(help="P R C of the volumes")]
    = (12, 24, 24),
    mesh_size: Annotated[float, typer.Option(help="reconstruction mesh size, m")] = 0.016,
    duration: Annotated[float, typer.Option(help="seconds of breathing, replayed in a loop")]
    = 12.0,
    method: Annotated[str | None, typer.Option(help="main method (default: the API's, d2ip)")]
    = None,
) -> None:
    """Run valkey, the API, a worker and a simulated belt here; Ctrl-C stops them."""
    import httpx

    from service.contract.tokens import FRAMES_WRITE, SCOPES, VOLUMES_READ, create_token
    from worker.belt import Belt
    from worker.recording import Recording
    from worker.runtime.local import Child, start_api, start_valkey, start_worker

    t0 = time.monotonic()
    children: list[Child] = []

    def step(what: str) -> None:
        typer.echo(f"[{time.monotonic() - t0:5.1f} s] {what}", err=True)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(sig, interrupt)
    stop = threading.Event()
    belt_thread: threading.Thread | None = None
    sid = None
    secret = secrets.token_urlsafe(48)
    admin = create_token(secret, SCOPES, 12 * 3600, subject="demo")
    client = httpx.Client(headers={"Authorization": f"Bearer {admin}"}, trust_env=False,
                          timeout=10.0)
    belt_client: httpx.Client | None = None
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            children.append(start_valkey(own_session=True))
            redis_url = children[-1].url
            step("embedded valkey ready")
        children.append(start_api(redis_url, secret, port=port, own_session=True))
        client.base_url = children[-1].url
        step(f"API ready on {client.base_url}")
        children.append(start_worker(redis_url, {"EITMON_WORKER_NAME": "demo-worker"},
                                     own_session=True))
        settings = demo_settings(grid, mesh_size)
        body = {**settings, "patient_label": "Demo patient",  # the method's default policy
                "bed": "demo", **({"method": method} if method else {})}
        r = client.post("/v1/sessions", json=body)  # the worker builds the model meanwhile
        r.raise_for_status()
        sid = r.json()["id"]
        recording = Recording.load(demo_recording(settings, duration))
        step(f"recording: {recording.n_frames} frames of {recording.n_measurements} values")
        device = create_token(secret, [FRAMES_WRITE], 12 * 3600, subject="demo-belt",
                              sessions=[sid])
        belt_client = httpx.Client(base_url=client.base_url, trust_env=False, timeout=10.0,
                                   headers={"Authorization": f"Bearer {device}"})
        belt = Belt(belt_client, recording, rate=rate)
        belt.set_reference(sid)
        belt_thread = threading.Thread(target=belt.stream, name="belt", daemon=True,
                                       kwargs={"sid": sid, "loop": True, "stop": stop})
        belt_thread.start()
        viewer = create_token(secret, [VOLUMES_READ], 12 * 3600, subject="demo-viewer",
                              sessions=[sid])
        typer.echo(f"viewer: {client.base_url}/viewer\nsession: {sid}\ntoken: {viewer}",
                   err=False)
        typer.echo("open the viewer, paste the token, pick the session; Ctrl-C stops the demo",
                   err=True)
        wait_for_first_volume(client, sid, children, step)
        while belt_thread.is_alive() and all(c.process.poll() is None for c in children):
            belt_thread.join(0.5)
        dead = [c.name for c in children if c.process.poll() is not None] or ["belt"]
        typer.secho(f"eitmon demo: {', '.join(dead)} stopped unexpectedly", fg="red", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        step("stopping")
    finally:
        stop.set()
        if belt_thread is not None:
            belt_thread.join(5)
        if sid is not None:
            with contextlib.suppress(httpx.HTTPError):
                client.delete(f"/v1/sessions/{sid}")
                deadline = time.monotonic() + 5  # let the worker finish the session
                while (client.get(f"/v1/sessions/{sid}").json()["worker"] is not None
                       and time.monotonic() < deadline):
                    time.sleep(0.2)
        client.close()
        if belt_client is not None:
            belt_client.close()
        for child in reversed(children):
            child.stop()
        step("stopped")


def wait_for_first_volume(client: Any, sid: str, children: list[Any], step: Any) -> None:
    """Report how long the cold start took (forward model, methods) until the first volume."""
    while all(c.process.poll() is None for c in children):
        counters = client.get(f"/v1/sessions/{sid}").json()["counters"]
        if counters["reconstructed"] > 0:
            step("first volume reconstructed: the viewer shows the patient now")
            return
        time.sleep(0.5)
