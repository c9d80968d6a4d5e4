"""`eitmon reconstruct FILE.npz --method NAME --out RECON.npz`: offline reconstruction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from worker.reference import REFERENCE_HELP

_FILE = {"exists": True, "dir_okay": False, "readable": True}


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def parse_options(items: list[str]) -> dict[str, Any]:
    """['mu=0.1', 'prior=identity'] -> {'mu': 0.1, 'prior': 'identity'} (values as JSON, else
    as strings)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options


def _reference(rec: Any, spec: str | None) -> Any:
    """The reference voltages `spec` names: the file's own (None), another recording's or a
    .npy vector (a FILE), or a mean over frames of this recording (see worker/reference.py)."""
    import numpy as np

    from worker.recording import Recording, RecordingError
    from worker.reference import choose_reference

    if spec is None:
        return rec.reference
    if Path(spec).is_file():
        try:
            voltages = (np.load(spec) if spec.endswith(".npy")
                        else Recording.load(spec).reference)
        except (RecordingError, ValueError, OSError) as exc:
            _fail(f"--reference {spec}: {exc}")
        if np.shape(voltages) != (rec.n_measurements,):
            _fail(f"--reference {spec}: has shape {np.shape(voltages)}, the recording has "
                  f"{rec.n_measurements} measurements")
        return np.asarray(voltages, dtype=float)
    try:
        return choose_reference(rec.voltages, rec.frame_times, spec)
    except ValueError as exc:
        _fail(f"--reference: {exc}")


def _excluded(rec: Any, spec: str | None, n_electrodes: int) -> tuple[int, ...]:
    """The 0-based model electrodes `--exclude-electrodes` names: a list, or 'flagged' (the
    quality report's, stored at import in device numbering, mapped through
    `meta.model_electrode`)."""
    from worker.recon.weighting import parse_electrodes

    if not spec:
        return ()
    if spec != "flagged":
        return parse_electrodes(spec, n_electrodes)
    flagged = (rec.meta.get("quality") or {}).get("flagged_electrodes")
    if flagged is None:
        raise ValueError("--exclude-electrodes flagged: FILE has no quality report "
                         "(eitmon import writes one)")
    placement = rec.meta.get("model_electrode")
    return tuple(sorted(placement[e - 1] if placement else e - 1 for e in flagged))


def reconstruct(
    file: Annotated[Path, typer.Argument(help="recording .npz", metavar="FILE.npz", **_FILE)],
    method: Annotated[str, typer.Option(help="reconstruction method (see the error for the "
                                             "list)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="reconstruction .npz to write",
                                      metavar="RECON.npz")],
    device: Annotated[str, typer.Option(help="cpu or cuda (for methods that run on torch)")]
    = "cpu",
    option: Annotated[list[str] | None, typer.Option(
        help="method option KEY=VALUE, e.g. mu=0.2 (repeat)", metavar="KEY=VALUE")] = None,
    reference: Annotated[str | None, typer.Option(
        help=f"reference: {REFERENCE_HELP} (over all of FILE's frames), or FILE (a recording "
             f"or .npy); default FILE's own", metavar="SPEC|FILE")] = None,
    frames: Annotated[str | None, typer.Option(
        help="reconstruct frames A to B-1 only (0-based)", metavar="A:B")] = None,
    exclude_electrodes: Annotated[str | None, typer.Option(
        help="electrodes to exclude, 1-based in the model's numbering (e.g. 3,7), or 'flagged' "
             "for those FILE's quality report flags", metavar="LIST|flagged")] = None,
    noise_weights: Annotated[bool, typer.Option(
        help="weight channels by their noise estimated from FILE's frames")] = False,
    batch: Annotated[int, typer.Option(
        min=1, help="frames per reconstructor call (1: one frame at a time, as live)")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary")] = False,
) -> None:
    """Reconstruct the frames of FILE with METHOD (model rebuilt from FILE's meta).

    Reports frames per second: frames over the wall time of the reconstruction loop (model and
    method set-up excluded), and over the process's CPU time in that loop."""
    import time

    import numpy as np

    from worker.devices.consistency import check_protocol
    from worker.forward import load_model
    from worker.recon.base import available_methods, create, reconstruct_recording
    from worker.recon.weighting import DataWeighting, weighted_model
    from worker.recording import Reconstruction, Recording, RecordingError, protocol_measurements
    from worker.reference import frame_slice

    if method not in available_methods():
        _fail(f"unknown method {method!r}; available: {', '.join(available_methods())}")
    if device not in ("cpu", "cuda"):
        _fail(f"--device: expected cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _fail("--device cuda: no CUDA device is available")
    if not out.parent.is_dir():
        _fail(f"--out: folder {out.parent} does not exist")
    options = parse_options(option or [])
    try:
        rec = Recording.load(file)
    except RecordingError as exc:
        _fail(str(exc))
    try:
        expected = protocol_measurements(rec.meta)
    except RecordingError as exc:
        _fail(f"{file}: {exc}")
    if rec.n_measurements != expected:  # checked before any model is built
        _fail(f"{file}: voltages have {rec.n_measurements} measurements per frame, the protocol "
              f"of its meta (geometry, protocol) has {expected}")
    ref = _reference(rec, reference)
    try:
        chosen = frame_slice(frames, rec.n_frames) if frames else slice(0, rec.n_frames)
    except ValueError as exc:
        _fail(f"--{exc}")
    if np.any(ref == 0):
        _fail(f"{file}: reference: zero voltage on channel(s) "
              f"{np.flatnonzero(ref == 0).tolist()}: cannot normalise")
    try:
        model = load_model(**{k: rec.meta[k] for k in ("geometry", "protocol", "grid")},
                           progress=not as_json)
    except (ValueError, TypeError) as exc:
        _fail(f"{file}: meta: cannot build the forward model ({exc})")
    check = check_protocol(ref, model.reference_voltages, model.protocol.meas_injection)
    if check.verdict == "refuse":
        _fail(f"{file}: {check.message}")
    if check.verdict == "warn":
        typer.secho(f"warning: {file}: {check.message}", fg="yellow", err=True)
    try:
        weighting = DataWeighting(exclude=_excluded(rec, exclude_electrodes,
                                                    model.geometry.electrodes.count),
                                  noise="data" if noise_weights else "model")
        model = weighted_model(model, weighting, rec.voltages, ref)
    except ValueError as exc:
        _fail(f"data weights: {exc}")
    try:
        recon = create(method, model, device=device, **options)
    except (TypeError, ValueError) as exc:
        _fail(f"method {method}: {exc}")
    wall, cpu = time.perf_counter(), time.process_time()
    volumes, results = reconstruct_recording(recon, rec.voltages[chosen], ref,
                                             progress=not as_json, batch=batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    seconds = np.array([r.milliseconds / 1e3 for r in results])
    meta = {"method": method, "source": str(file), "settings": recon.settings,
            "device": device, "model": model.spec, "frames": [chosen.start, chosen.stop],
            "reference": reference or "file", "protocol_check": check.to_dict(),
            "data_weights": weighting.to_dict()}
    Reconstruction(volumes=volumes, seconds_per_frame=seconds,
                   iterations=np.array([r.iterations for r in results]), mask=model.mask,
                   meta=meta).save(out)
    summary = {"method": method, "out": str(out), "frames": len(results), "batch": batch,
               "mean_seconds_per_frame": float(seconds.mean()),
               "frames_per_second": len(results) / wall,
               "frames_per_cpu_second": len(results) / cpu if cpu > 0 else None,
               "settings": recon.settings}
    typer.echo(json.dumps(summary) if as_json else
               f"wrote {out}: {len(results)} frames with {method}, "
               f"{seconds.mean() * 1e3:.2f} ms per frame, {len(results) / wall:.0f} frames/s "
               f"({batch} per call)")
