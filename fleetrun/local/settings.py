"""Settings of the local runtime, from the FLEETRUN_* environment of API.md."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


@dataclass(frozen=True)
class LocalSettings:
    host: str = "127.0.0.1"
    #: the ports: 0 picks a free one (the runtime writes the ones it took to `endpoints_path`)
    port: int = 8000
    ws_port: int = 8001
    #: the gateway's `@connections` management endpoint (0: any free port)
    ws_management_port: int = 0
    moto_port: int = 0
    jwt_secret: str = "local-dev-secret"
    lease_seconds: int = 60
    sweep_seconds: int = 10
    demo_agents: int = 3
    rate_limit: int = 600
    data_dir: Path = Path(".fleetrun")
    #: a machine crash loses at most this many seconds of acknowledged writes (0: fsync each write)
    fsync_seconds: float = 1.0

    @classmethod
    def from_env(cls) -> LocalSettings:
        return cls(
            host=os.environ.get("FLEETRUN_HOST", "127.0.0.1"),
            port=_int("FLEETRUN_PORT", 8000),
            ws_port=_int("FLEETRUN_WS_PORT", 8001),
            ws_management_port=_int("FLEETRUN_WS_MANAGEMENT_PORT", 0),
            moto_port=_int("FLEETRUN_MOTO_PORT", 0),
            jwt_secret=os.environ.get("FLEETRUN_JWT_SECRET") or "local-dev-secret",
            lease_seconds=_int("FLEETRUN_LEASE_SECONDS", 60),
            sweep_seconds=_int("FLEETRUN_SWEEP_SECONDS", 10),
            demo_agents=_int("FLEETRUN_DEMO_AGENTS", 3),
            rate_limit=_int("FLEETRUN_RATE_LIMIT", 600),
            data_dir=Path(os.environ.get("FLEETRUN_DATA_DIR", ".fleetrun")),
            fsync_seconds=float(os.environ.get("FLEETRUN_FSYNC_SECONDS", "").strip() or 1.0),
        )

    @property
    def state_dir(self) -> Path:
        """Where the stand-in's snapshot and journal live (`fleetrun.local.durable`)."""
        return self.data_dir / "state"

    @property
    def endpoints_path(self) -> Path:
        """The ports the running runtime took (`FLEETRUN_PORT=0` and the like pick free ones)."""
        return self.data_dir / "endpoints.json"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"
