"""Service and training settings: one `Settings` class, read from the environment (or `.env`)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """Datasets, checkpoints and the run database live in the user's cache, never in the repo."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labnets"


class Settings(BaseSettings):
    """Every knob of the service and of training; each field is an environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    MODEL_DIR: Path = Field(REPO_ROOT / "models", description="The model store: <name>/<version>/.")
    DATA_DIR: Path = Field(default_factory=default_data_dir, description="Datasets, checkpoints, DB.")
    DATABASE_URL: str = Field("", description="SQLAlchemy URL; empty means SQLite in DATA_DIR.")
    DEVICE: Literal["cpu", "gpu", "auto"] = "auto"
    PINNED_VERSIONS: dict[str, int] = Field(
        default_factory=dict, description='Serve these versions instead of the newest: {"digits": 1}'
    )
    LOG_LEVEL: str = "INFO"

    # Limits on what a request may carry.
    MAX_UPLOAD_BYTES: int = 10 * 1024 * 1024
    MAX_IMAGE_PIXELS: int = 40_000_000
    MAX_FILES_PER_REQUEST: int = 32
    MAX_K: int = 100
    MAX_BODY_BYTES: int = 64 * 1024 * 1024
    BODY_READ_TIMEOUT_S: float = 30.0
    MAX_DETECT_TILES: int = Field(
        256, description="Tiles one /detect image may be cut into (256 tiles of 256 px ≈ 10 megapixels)."
    )

    @field_validator("MODEL_DIR", "DATA_DIR")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{self.DATA_DIR / 'runs.sqlite'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
