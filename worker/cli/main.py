"""`eitmon`: one command line for the demo, the service parts and the offline engine."""

from __future__ import annotations

import typer

from worker.cli import (
    api,
    bench,
    demo,
    device,
    import_recording,
    metrics,
    model,
    parameters,
    plot,
    reconstruct,
    simulate,
    train,
    worker,
)

app = typer.Typer(help="EIT lung-ventilation monitor: D2IP 3D reconstruction, service and tools.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(model.app, name="model")
app.add_typer(bench.app, name="bench")
app.add_typer(train.app, name="train")
app.command("metrics")(metrics.metrics)
app.command("parameters")(parameters.parameters)
app.command("plot")(plot.plot)
app.command("simulate")(simulate.simulate)
app.command("reconstruct")(reconstruct.reconstruct)
app.command("import")(import_recording.import_recording)
app.command("api", context_settings=api.PASS_THROUGH, add_help_option=False)(api.api)
app.command("token", context_settings=api.PASS_THROUGH, add_help_option=False)(api.token)
app.command("worker")(worker.worker)
app.command("device")(device.device)
app.command("demo")(demo.demo)
# Further command groups register here, one module each under worker/cli/.

if __name__ == "__main__":
    app()
