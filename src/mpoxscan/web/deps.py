"""Dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from mpoxscan.deploy.runtime import Screener
from mpoxscan.web.app import Settings


def get_screener(request: Request) -> Screener:
    return request.app.state.screener


def get_settings(request: Request) -> Settings:
    return request.app.state.settings
