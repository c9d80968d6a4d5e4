"""`python -m service`: the API's command line (`service.cli`)."""

from service.cli import app

if __name__ == "__main__":
    app(prog_name="eitmon-service")
