"""`meter-edge setup`: serve the installer's page while setup runs, behind a one-time PIN."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from contract.settings import ConfigError
from edge.config import load_edge_config

log = logging.getLogger("edge.setup")


@click.command("setup")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config TOML (default: config/edge.toml when it exists); EDGE_* variables override it.")
@click.option("--host", default="0.0.0.0", show_default=True,
              help="Address to listen on (0.0.0.0: the installer's phone on the same network).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
def setup(config_path: Path | None, host: str, port: int) -> None:
    """Serve the installer's page: the camera's frame, proposed digit windows to drag and resize, a test read,
    and Save (writes the layout and its picture). It listens only while this command runs (Ctrl-C ends it).

    \b
    Open http://<this device>:PORT/ and enter the one-time PIN printed here (and in the journal).
    Stop the service first: the camera has one user.
    """
    import uvicorn

    from edge.setup.app import SetupState, create_app, new_pin

    try:
        cfg = load_edge_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    pin = new_pin()
    state = SetupState(cfg, pin)
    click.echo(f"setup page for {cfg.device_id}: http://{host if host != '0.0.0.0' else '<this device>'}:{port}/")
    click.echo(f"PIN: {pin}   (valid until this command ends; 5 wrong tries lock the page)")
    logging.getLogger("edge.setup").warning("setup page started on port %d, PIN %s", port, pin)
    uvicorn.run(create_app(state), host=host, port=port, log_level="warning")
