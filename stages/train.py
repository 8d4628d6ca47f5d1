"""DVC stage `train`: see `pipeline train --help` and dvc.yaml."""

from pipeline.cli import app

if __name__ == "__main__":
    app(["train"], prog_name="pipeline train")
