"""`meter-edge setup`: serve the installer's page over HTTPS while setup runs, behind a one-time PIN."""

from __future__ import annotations

import logging
import sys
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
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP instead of HTTPS; only with a loopback --host (127.0.0.1, e.g. through an SSH "
                   "tunnel), never where the PIN would cross the network in clear.")
def setup(config_path: Path | None, host: str, port: int, insecure_http: bool) -> None:
    """Serve the installer's page: the camera's frame, proposed digit windows to drag and resize, a test read
    of the current and the last few frames with the agent's own pipeline, the meter's starting value, and
    Save (writes the layout and its picture, then asks the running agent to reload and take the starting
    value). It listens only while this command runs (Ctrl-C ends it).

    \b
    Open https://<this device>:PORT/ (or scan the QR code printed here) and enter the one-time PIN printed
    here and in the journal. The page uses a certificate this device made for itself (kept in state_dir):
    the browser warns that it does not know it; compare the SHA-256 fingerprint it shows under the
    certificate's details with the one printed here before you type the PIN.
    With the picamera2 camera, stop the service first (the camera has one user); Save's request waits
    for the service and is applied when it starts.
    """
    import segno
    import uvicorn

    from edge.setup.app import SetupState, create_app, new_pin
    from edge.setup.tls import ensure_certificate, is_loopback, local_addresses

    if insecure_http and not is_loopback(host):
        raise click.ClickException(f"--insecure-http only with a loopback --host (127.0.0.1), not {host}: the PIN "
                                   "would cross the network in clear. Leave it out to serve HTTPS")
    try:
        cfg = load_edge_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    addresses = local_addresses()
    shown = host if host not in ("0.0.0.0", "::") else (addresses[0] if addresses else "<this device>")
    keyfile: str | None = None
    certfile: str | None = None
    fingerprint = ""
    if not insecure_http:
        try:
            cert = ensure_certificate(cfg.state_dir, cfg.device_id, addresses)
        except OSError as exc:
            raise click.ClickException(
                f"cannot keep the page's certificate in state_dir {cfg.state_dir}: {exc.strerror or exc} "
                "(run setup as the service's user: sudo -u meter)") from None
        keyfile, certfile = str(cert.key), str(cert.cert)
        fingerprint = cert.fingerprint
        if cert.created:
            click.echo(f"made this device's certificate for the setup page: {cert.cert}")
    url = f"{'http' if insecure_http else 'https'}://{shown}:{port}/"
    pin = new_pin()
    state = SetupState(cfg, pin)
    click.echo(f"setup page for {cfg.device_id}: {url}")
    if sys.stdout.isatty():
        segno.make(url, error="l").terminal(compact=True)
    click.echo(f"PIN: {pin}   (valid until this command ends; 5 wrong tries lock the page)")
    if fingerprint:
        click.echo(f"certificate SHA-256: {fingerprint}")
        click.echo("  (the browser shows the same under the certificate's details: compare before typing the PIN)")
    log.warning("setup page started at %s, PIN %s%s", url, pin,
                f", certificate SHA-256 {fingerprint}" if fingerprint else " (plain HTTP, loopback only)")
    uvicorn.run(create_app(state, https=not insecure_http), host=host, port=port, log_level="warning",
                ssl_keyfile=keyfile, ssl_certfile=certfile)
