"""`meter-edge run`: the device agent as a command (systemd runs it; `--cycles N` for demos and tests)."""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
from pathlib import Path
from types import FrameType

import click

from contract.settings import ConfigError
from edge.config import load_edge_config

log = logging.getLogger("edge.agent")


@click.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config TOML (default: config/edge.toml when it exists); EDGE_* variables override it.")
@click.option("--cycles", type=click.IntRange(min=1), default=None,
              help="Stop after N cycles: publish the backlog for up to drain_timeout_s, then exit 0. "
                   "What is unsent stays in the outbox for the next start.")
def run(config_path: Path | None, cycles: int | None) -> None:
    """Run the device agent: every interval_s capture a frame, read the meter, store the reading in the
    outbox (state_dir) and publish it over MQTT; serve cmd/capture, cmd/reload and cmd/set-value;
    publish telemetry and Home Assistant discovery. Stop with SIGTERM (publishes `offline`); SIGHUP reloads
    the config and layout (`systemctl reload meter-edge`) and applies what `meter-edge setup` saved."""
    from edge.agent.memory import tune_malloc

    tune_malloc()  # before the first frame is allocated
    from edge.agent.core import Agent
    from edge.agent.pipeline_reader import PipelineReader
    from edge.transport.outbox import OutboxDamaged, OutboxFull

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("edge").setLevel(logging.INFO)
    try:
        cfg = load_edge_config(config_path)
        agent = Agent(cfg, PipelineReader.from_config, config_path=config_path)
    except (ConfigError, OutboxDamaged) as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, sqlite3.DatabaseError, OutboxFull) as exc:
        raise click.ClickException(f"state_dir {cfg.state_dir}: {exc} (it must be writable)") from None

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        agent.request_stop()

    def _hup(signum: int, frame: FrameType | None) -> None:
        agent.request_local()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _hup)  # reload; the setup page's request (edge/agent/local.py)
    sys.exit(agent.run(cycles))
