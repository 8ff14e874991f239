"""Operator settings from EIO_* environment variables, read once at start-up (docs/decisions.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EIO_", frozen=True, extra="ignore")

    watch_namespace: str = Field("", description="namespace to watch; empty = all namespaces")
    default_importer_image: str = "embedding-importer:0.1.0"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 8080  # 0 = no metrics server
    liveness_port: Annotated[int, Field(ge=0, le=65535)] = 8081  # 0 = no liveness endpoint
    resync_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 10
    log_format: Literal["plain", "json"] = "plain"
    # Watch timeouts: a watch is re-established at least this often, so a silently dropped
    # connection (API server restart behind a proxy) costs at most this long.
    watch_server_timeout_seconds: Annotated[int, Field(ge=1)] = 120
    watch_client_timeout_seconds: Annotated[int, Field(ge=1)] = 150
    workers: Annotated[int, Field(ge=1, le=64)] = 8
