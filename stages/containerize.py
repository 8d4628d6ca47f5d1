"""DVC stage `containerize`: see `pipeline containerize --help` and dvc.yaml."""

from pipeline.cli import app

if __name__ == "__main__":
    app(["containerize"], prog_name="pipeline containerize")
