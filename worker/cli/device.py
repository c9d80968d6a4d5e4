"""`eitmon device --replay FILE.npz`: a simulated belt streaming a recording to the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def device(
    replay: Annotated[Path, typer.Option(help="recording .npz to stream", exists=True,
                                         dir_okay=False)],
    url: Annotated[str, typer.Option(help="API base URL, e.g. http://127.0.0.1:8000")],
    token: Annotated[str, typer.Option(
        envvar="EITMON_TOKEN", help="bearer token (or set EITMON_TOKEN): with --session, "
                                    "frames:write bound to that session (plus volumes:read "
                                    "to continue after its last seq); without, "
                                    "sessions:admin and frames:write")],
    rate: Annotated[float, typer.Option(help="frames per second")] = 20.0,
    session: Annotated[str | None, typer.Option(
        help="stream into this session (default: create one for the recording)")] = None,
    batch: Annotated[int, typer.Option(help="frames per request")] = 1,
    json_body: Annotated[bool, typer.Option("--json", help="JSON bodies, not binary")] = False,
    loop: Annotated[bool, typer.Option(help="replay the recording until interrupted")] = False,
    close: Annotated[bool, typer.Option(help="close the session at the end")] = False,
    method: Annotated[str | None, typer.Option(help="method of a new session")] = None,
    realtime: Annotated[str | None, typer.Option(help="realtime | complete (new session)")]
    = None,
) -> None:
    """Stream a recording's frames at RATE frames/s like a belt would, printing progress."""
    import httpx

    from worker.belt import Belt, BeltError, Progress
    from worker.recording import Recording

    recording = Recording.load(replay)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10.0) as client:
        belt = Belt(client, recording, rate=rate, batch=batch, binary=not json_body)

        def report(p: Progress) -> None:
            typer.echo(f"sent {p.sent} frames in {p.seconds:.0f} s ({p.rate:.1f} frames/s), "
                       f"lag {p.lag_frames} frames, {p.duplicates} duplicates", err=True)

        try:
            if session is None:
                session = belt.open_session(method=method, realtime=realtime)
                seq0 = 0
            else:
                seq0 = belt.next_seq(session)
            typer.echo(f"session {session}: {recording.n_frames} frames of "
                       f"{recording.n_measurements} values at {rate:g} frames/s", err=True)
            try:
                progress = belt.stream(session, seq0=seq0, loop=loop, report=report)
            except KeyboardInterrupt:
                progress = None
            if close:
                client.delete(f"/v1/sessions/{session}").raise_for_status()
        except (BeltError, httpx.HTTPError) as e:
            typer.secho(f"eitmon device: {e}", fg="red", err=True)
            raise typer.Exit(1) from None
    if progress is not None:
        report(progress)
    typer.echo(session)
