"""`meter-edge`: the device's command line."""

from __future__ import annotations

import logging

import click

from contract.lazycli import LazyGroup
from edge import __version__

COMMANDS = {
    "calibrate": ("edge.calibrate.cli:calibrate", "Write layout.toml and a picture of the digit windows."),
    "capture": ("edge.capture.cli:capture", "Take one frame with the service's camera, LED and resolution."),
    "classify": ("edge.infer.cli:classify", "Classify a folder of digit crops into a CSV."),
    "doctor": ("edge.doctor:doctor", "Check camera, LED, layout, model, clock, disk, broker and bridge."),
    "read": ("edge.reading.cli:read", "Read meter photos with a layout; one JSON reading per line."),
    "run": ("edge.agent:run", "Run the device agent: capture, read, store, publish."),
    "setup": ("edge.setup.cli:setup", "Serve the installer's page: frame, windows to drag, test read, save."),
    "simulate": ("edge.capture.simulator.cli:simulate", "Render days of a virtual meter's photos."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meter-edge")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Read a water meter with a camera and a small digit model, and publish readings over MQTT.

    \b
    Installer's path:  capture -> calibrate --auto (or the setup page) -> doctor -> run
    Model check:       classify a folder of digit crops
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
