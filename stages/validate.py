"""DVC stage `validate`: see `pipeline validate --help` and dvc.yaml."""

from pipeline.cli import app

if __name__ == "__main__":
    app(["validate"], prog_name="pipeline validate")
