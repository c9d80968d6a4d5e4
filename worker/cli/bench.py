"""`eitmon bench ...`: benchmarks (quality, clinical, breath, convergence, speed, load, service,
model, faults, realdata, heart, durability, prior, realtime, educated, tank, carry).

Each benchmark lives in its own module and registers one command on `app` below.
"""

from __future__ import annotations

import typer

from worker.cli import (
    bench_breath,
    bench_carry,
    bench_clinical,
    bench_convergence,
    bench_durability,
    bench_educated,
    bench_faults,
    bench_heart,
    bench_load,
    bench_model,
    bench_prior,
    bench_quality,
    bench_realdata,
    bench_realtime,
    bench_service,
    bench_speed,
    bench_tank,
)

app = typer.Typer(help="Benchmarks. Timings are reported as ratios against a baseline measured "
                       "in the same run.", no_args_is_help=True)
app.command("model")(bench_model.model)
app.command("service")(bench_service.service)
app.command("quality")(bench_quality.quality)
app.command("clinical")(bench_clinical.clinical)
app.command("convergence")(bench_convergence.convergence)
app.command("speed")(bench_speed.speed)
app.command("load")(bench_load.load)
app.command("breath")(bench_breath.breath)
app.command("faults")(bench_faults.faults)
app.command("realdata")(bench_realdata.realdata)
app.command("heart")(bench_heart.heart)
app.command("durability")(bench_durability.durability)
app.command("prior")(bench_prior.prior)
app.command("realtime")(bench_realtime.realtime)
app.command("educated")(bench_educated.educated)
app.command("tank")(bench_tank.tank)
app.command("carry")(bench_carry.carry)
