"""Service and training settings: one `Settings` class, read from the environment (or `.env`)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """Datasets, checkpoints and the run database live in the user's cache, never in the repo."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labnets"


class Batching(BaseModel):
    """Any part of one model's batching: in its manifest (`batching`, what its author measured best)
    or in BATCHING_OVERRIDES (which wins). A misspelt key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(None, ge=1)
    max_delay_ms: float | None = Field(None, ge=0, allow_inf_nan=False)
    max_in_flight: int | None = Field(None, ge=1)


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
    LOG_FORMAT: Literal["text", "json"] = "text"
    CORS_ORIGINS: list[str] = Field(default_factory=list, description='Allowed browser origins, e.g. ["https://a.example"]')
    ADMIN_API_KEY: SecretStr | None = Field(
        None, description="Key for the admin endpoints (X-API-Key header); unset: they are disabled."
    )
    RELOAD_INTERVAL_S: float = Field(5.0, ge=0, description="How often to look for new model versions; 0: never.")

    # Limits on what a request may carry.
    MAX_UPLOAD_BYTES: int = 10 * 1024 * 1024
    MAX_IMAGE_PIXELS: int = 40_000_000
    MAX_DECODING_PIXELS: int = Field(
        40_000_000, ge=1, description="Pixels decoded and prepared at once across the service (every model and "
                                      "/detect); an image that would go over waits for others to finish, one larger "
                                      "than it runs alone. A 16-bit PNG takes about 12 bytes a pixel at its peak.")
    MAX_FILES_PER_REQUEST: int = 32
    MAX_K: int = 100
    MAX_ANALOGY_TERMS: int = 10  # positive + negative words in one /analogy query
    MAX_BODY_BYTES: int = 64 * 1024 * 1024
    BODY_READ_TIMEOUT_S: float = 30.0
    MAX_RECORDS_PER_REQUEST: int = Field(1000, description="Records (rows) in one /anomaly request.")
    MAX_RECORDS_BYTES: int = Field(8 * 1024 * 1024, description="An /anomaly JSON body or CSV upload.")

    # Inference runtime.
    BATCHING: bool = Field(True, description="Gather concurrent requests into one model call.")
    MAX_BATCH_SIZE: int = Field(32, ge=1, description="Most rows in one model call.")
    MAX_DELAY_MS: float = Field(2.0, ge=0, description="Longest a request waits for others to join.")
    MAX_BATCHES_IN_FLIGHT: int = Field(4, ge=1, description="Batches of one model running at once.")
    BATCHING_OVERRIDES: dict[str, Batching] = Field(
        default_factory=dict,
        description='Per model, over its manifest\'s `batching`: {"imagenet": {"max_batch_size": 8, "max_delay_ms": 10, '
                    '"max_in_flight": 1}}',
    )
    BENCHMARK_BASELINES: bool = Field(False, description="Serve /baseline/* no-model endpoints.")
    TF_INTRA_OP_THREADS: int = Field(0, ge=0, description="Threads inside one op; 0 = TensorFlow's choice.")
    TF_INTER_OP_THREADS: int = Field(0, ge=0, description="Ops run in parallel; 0 = TensorFlow's choice.")
    EVENT_LOOP_CPU: int = Field(
        0, ge=-1, description="Which of the allowed CPUs the event loop and batch threads share once the models "
                              "are loaded (TensorFlow's threads keep all); -1: no pinning (several workers).")

    # Run registry.
    RUN_STALE_AFTER_S: float = Field(
        6 * 3600, gt=0, description="A running run with no heartbeat for this long is marked failed (stale)."
    )
    MAX_DETECTS_IN_FLIGHT: int = Field(
        2, ge=1, description="/detect requests tiled and run at once; more wait their turn. Each holds up to "
                             "MAX_DETECT_TILES float tiles (about 0.8 GB at the limit), so this bounds memory.")
    MAX_DETECT_TILES: int = Field(
        1024, description="Tile passes one /detect request may run: its images' tiles times the flip views "
                          "(1,024: 256 tiles of 256 px in four views, a 1550x1550 image enlarged x2; 413 beyond).")

    @field_validator("MODEL_DIR", "DATA_DIR")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    def batching_for(self, model: str, own: Batching | None = None) -> tuple[int, float, int] | None:
        """(max_batch_size, max_delay_ms, max_in_flight) for `model`, or None when batching is off:
        each from BATCHING_OVERRIDES, else the model's `own` (its manifest's), else the setting."""
        if not self.BATCHING:
            return None
        chosen = [choice for choice in (self.BATCHING_OVERRIDES.get(model), own) if choice is not None]

        def pick(name: str, default: float) -> float:
            return next((value for choice in chosen if (value := getattr(choice, name)) is not None), default)

        return (int(pick("max_batch_size", self.MAX_BATCH_SIZE)), float(pick("max_delay_ms", self.MAX_DELAY_MS)),
                int(pick("max_in_flight", self.MAX_BATCHES_IN_FLIGHT)))

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{self.DATA_DIR / 'runs.sqlite'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
