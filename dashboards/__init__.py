"""The console (``web/``) and Grafana provisioning, shipped inside the package so an installed
gateway (the production image included) serves the console without the source tree."""

from importlib.resources import files
from pathlib import Path

CONSOLE_DIR = Path(str(files(__name__) / "web"))
