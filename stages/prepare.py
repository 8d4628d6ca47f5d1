"""DVC stage `prepare`: see `pipeline prepare --help` and dvc.yaml."""

from pipeline.cli import app

if __name__ == "__main__":
    app(["prepare"], prog_name="pipeline prepare")
