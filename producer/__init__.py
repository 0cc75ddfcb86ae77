"""AskElephant API v2 -> Apache Kafka change-stream producer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("askelephant-kafka")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
