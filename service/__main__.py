"""`python -m service`: the API's command line (`service.cli`)."""

from service.cli import app

app(prog_name="eitmon-service")
