"""The device agent's main loop: schedule cycles, store each reading durably, publish the backlog in order.

One thread owns everything that decides (the outbox, the schedule, the reading state); paho's network
thread only posts events to a queue. A cycle reads one frame through a `Reader` (the real pipeline, or
anything a test injects), commits the reading to the outbox with a new seq, and only then publishes.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from contract import topics
from contract.payloads import CommandResult, Reading
from contract.settings import ConfigError
from edge import __version__
from edge.agent import local
from edge.agent.memory import release_memory
from edge.agent.watchdog import Watchdog
from edge.config import EdgeConfig, load_edge_config
from edge.transport import discovery
from edge.transport.commands import Command, Refused, parse_command
from edge.transport.meter_state import MeterStateKeeper
from edge.transport.mqtt import ONLINE, Event, Message, MqttLink, Wake
from edge.transport.outbox import Outbox, OutboxFull, is_disk_full
from edge.transport.session import Session
from edge.transport.telemetry import build_telemetry

log = logging.getLogger("edge.agent")

STAGES = ("capture", "align", "infer", "assemble", "commit", "publish")


class EndOfSource(Exception):
    """The frame source is exhausted (the folder backend at its end): stop capturing, keep serving."""


@dataclass
class ReadResult:
    """One frame read. `reading.seq` is a placeholder: the outbox gives the real one at commit."""

    reading: Reading
    state: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Reader(Protocol):
    """Reads one frame into a reading; the agent owns scheduling, storage and the reading-rule state."""

    model_id: str

    def read(self, state: dict[str, Any] | None) -> ReadResult: ...

    def set_previous(self, state: dict[str, Any] | None, value: str, at: datetime) -> dict[str, Any]:
        """The installer's `set-value`: the state with this accepted value and no stuck refusal."""
        ...

    def close(self) -> None: ...


ReaderFactory = Callable[[EdgeConfig], Reader]


@dataclass
class Stats:
    cycles: int = 0
    commands_refused: int = 0
    last_error: str | None = None
    last_timings: dict[str, float] = field(default_factory=dict)


class Agent:
    def __init__(self, cfg: EdgeConfig, reader_factory: ReaderFactory, *, config_path: Path | None = None,
                 events: queue.Queue[Event] | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.reader_factory = reader_factory
        self.events: queue.Queue[Event] = events or queue.Queue()
        self.outbox = Outbox(cfg.state_dir)
        self.reader: Reader = reader_factory(cfg)
        self.link = MqttLink(cfg.mqtt, cfg.device_id, self.events)
        self.watchdog = Watchdog()
        self.stats = Stats()
        self.started = time.monotonic()
        self.session = Session(cfg.device_id, cfg.mqtt, self.outbox, self.link, ack_timeout_s=cfg.ack_timeout_s,
                               on_error=self.error, on_announce=self._announce,
                               subscriptions=((discovery.HA_STATUS_TOPIC, 1),))
        self.meter_state = MeterStateKeeper(cfg.device_id, self.outbox)
        self.publish_state()  # goes out (retained) on every connection
        self._capture_now = False
        self._local_request = False
        self._capturing = True
        self.pid_lock = local.PidLock(cfg.state_dir)
        self._stop = False
        self._next_cycle = 0.0
        self._next_telemetry = 0.0

    # -- public control -------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop = True
        self.events.put(Wake())

    def request_capture(self) -> None:
        self._capture_now = True
        self.events.put(Wake())

    def request_local(self) -> None:
        """SIGHUP: the setup page's request in state_dir (edge/agent/local.py), or a plain reload."""
        self._local_request = True
        self.events.put(Wake())

    @property
    def _inflight(self) -> dict[int, int]:
        """mid -> seq of the readings paho holds (the session's)."""
        return self.session.inflight

    def error(self, msg: str, *args: Any) -> None:
        text = msg % args if args else msg
        self.stats.last_error = text
        log.error(text)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, cycles: int | None = None) -> int:
        """Run until stopped, or after `cycles` cycles drain for `drain_timeout_s` and return."""
        if not self.pid_lock.acquire():
            if self.pid_lock.error:
                self.error("cannot write the pid file (%s): the setup page cannot reach this agent; "
                           "`systemctl restart meter-edge` after a setup", self.pid_lock.error)
            else:
                log.error("another agent (pid %s) runs on state_dir %s: two agents share one outbox; stop one",
                          self.pid_lock.other, self.cfg.state_dir)
        self.session.start()
        if (self.cfg.state_dir / local.REQUEST_NAME).exists():
            self.local_request(at_start=True)  # saved by the setup page while no agent ran
        release_memory()  # what loading the model and the layout touched once
        self.watchdog.notify("READY=1")
        depth = self.outbox.depth()
        log.info("agent %s started: device %s, interval %.3gs, broker %s:%d, %d readings waiting in the outbox",
                 __version__, self.cfg.device_id, self.cfg.interval_s, self.cfg.mqtt.host, self.cfg.mqtt.port, depth)
        now = time.monotonic()
        self._next_cycle = now
        self._next_telemetry = now + self.cfg.telemetry_interval_s
        try:
            while not self._stop:
                if self._local_request:
                    self._local_request = False
                    self.local_request()
                now = time.monotonic()
                if self._capture_now or (self._capturing and now >= self._next_cycle):
                    scheduled = not self._capture_now
                    self._capture_now = False
                    self.cycle()
                    if scheduled:
                        self._next_cycle = max(self._next_cycle + self.cfg.interval_s, time.monotonic())
                    if cycles is not None and (self.stats.cycles >= cycles or not self._capturing):
                        break
                if now >= self._next_telemetry:
                    self.publish_telemetry()
                    self._next_telemetry = now + self.cfg.telemetry_interval_s
                self.session.announce()
                self.session.pump()
                self.watchdog.ping()
                wake_at = min(self._next_cycle if self._capturing else float("inf"), self._next_telemetry,
                              now + 1.0)
                self._handle_events(max(0.0, wake_at - time.monotonic()))
            if cycles is not None and not self._stop:
                self.drain(self.cfg.drain_timeout_s)
        finally:
            self.shutdown()
        return 0

    def drain(self, timeout_s: float) -> None:
        """Publish the backlog for up to `timeout_s`; then wait a moment for the bridge's acks."""
        deadline = time.monotonic() + timeout_s
        all_published_at: float | None = None
        while not self._stop and time.monotonic() < deadline:
            self.session.pump()
            self.watchdog.ping()
            if self.session.unsent() == 0:
                if self.outbox.count("published") == 0:
                    break
                # The bridge usually acks within milliseconds; don't wait the whole timeout without one.
                all_published_at = all_published_at or time.monotonic()
                if time.monotonic() - all_published_at > 1.0:
                    break
            self._handle_events(0.05)
        left = self.outbox.depth()
        if left:
            log.info("exiting with %d readings not yet acknowledged by the bridge; they go out on the next start",
                     left)

    def shutdown(self) -> None:
        self.watchdog.notify("STOPPING=1")
        try:
            if self.link.connected:
                self.publish_telemetry()
            self.session.stop()
        finally:
            self.reader.close()
            self.outbox.close()
            self.pid_lock.release()
        log.info("agent stopped")

    def _handle_events(self, timeout: float) -> None:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            try:
                self.handle(event)
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                self.error("disk full while updating the outbox (%s); the reading will be published again", exc)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    # -- one cycle ------------------------------------------------------------------------------
    def cycle(self) -> int | None:
        """Read one frame, commit the reading, publish. Returns the new seq (None: nothing stored)."""
        self.stats.cycles += 1
        t0 = time.perf_counter()
        try:
            result = self.reader.read(self.outbox.reading_state())
        except EndOfSource as exc:
            self._capturing = False
            log.warning("no more frames: %s; capturing stops (commands, telemetry and the outbox keep running)",
                        exc)
            return None
        except Exception as exc:
            self.error("cycle %d: reading the meter failed: %s: %s", self.stats.cycles, type(exc).__name__, exc)
            try:
                error_reading = self._error_reading(f"{type(exc).__name__}: {exc}")
            except ValueError as bad:  # e.g. this device's clock is outside the contract's window
                self.error("cycle %d: not even an error reading can be stored: %s", self.stats.cycles, bad)
                return None
            result = ReadResult(error_reading, timings={"capture": time.perf_counter() - t0})
        timings = dict(result.timings)
        t1 = time.perf_counter()
        try:
            stored = self.outbox.add(result.reading, result.state)
        except OutboxFull as exc:
            self.error("%s", exc)
            return None
        except Exception as exc:
            if is_disk_full(exc):
                self.error("disk full: %s", exc)
                return None
            raise
        if stored.dropped:
            self.error("disk full: dropped the %d oldest unsent readings to keep seq %d", stored.dropped, stored.seq)
        elif self.outbox.disk_full:
            self.stats.last_error = "disk full: pruned acknowledged readings to make room"
        timings["commit"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        self.session.pump()
        self._advance_state(stored.payload)
        timings["publish"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        self.stats.last_timings = timings
        r = result.reading
        log.info("seq %d: %s %s%s", stored.seq, r.status, r.value, f" ({r.reason})" if r.reason else "")
        self.watchdog.notify(f"STATUS=seq {stored.seq}: {r.status} {r.value}; outbox {self.outbox.depth()}; "
                             f"{'connected' if self.link.connected else 'offline'}")
        release_memory()  # the frame's buffers are free now: give them back (edge/agent/memory.py)
        return stored.seq

    def _advance_state(self, payload: bytes) -> None:
        """Fold the reading just committed into Home Assistant's state and publish that (retained)."""
        try:
            advanced = self.meter_state.advance(Reading.model_validate_json(payload))
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.error("disk full: Home Assistant's state not updated (%s); the next reading updates it", exc)
            return
        if advanced:
            self.publish_state()

    def publish_state(self) -> None:
        self.session.keep_retained(topics.state(self.cfg.device_id), self.meter_state.payload())

    def _error_reading(self, reason: str) -> Reading:
        return Reading(device_id=self.cfg.device_id, seq=0, taken_at=datetime.now(UTC), value=None,
                       status="error", reason=reason[:500], confidence=0.0, model=self.reader.model_id)

    # -- events ---------------------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        msg = self.session.handle(event)
        if msg is None:
            return
        if msg.topic == discovery.HA_STATUS_TOPIC:
            if msg.payload.strip() == ONLINE:
                log.info("Home Assistant is back online: publishing discovery again")
                self.publish_discovery()
        elif msg.topic.startswith(topics.cmd(self.cfg.device_id, "")):
            self._on_command(msg)

    def _announce(self) -> None:
        """Called by the session after its retained `online`: discovery and telemetry."""
        self.publish_discovery()
        self.publish_telemetry()

    # -- commands -------------------------------------------------------------------------------
    def _on_command(self, msg: Message) -> None:
        parsed = parse_command(self.cfg.device_id, msg.topic, msg.payload, retained=msg.retain)
        if isinstance(parsed, Refused):
            self._answer(parsed.name, parsed.id, self._refuse(parsed))
            return
        log.info("command %s", parsed.name)
        refused: str | None = None
        if parsed.name == "capture":
            self._capture_now = True
        elif parsed.name == "reload":
            refused = self._reload()
        elif parsed.name == "set-value":
            refused = self._set_value(parsed)
        self._answer(parsed.name, parsed.id, refused)

    def _answer(self, name: str, cmd_id: str | None, refused: str | None) -> None:
        """The answer on meters/{id}/cmd/{name}/result, for whoever sent the command (not retained)."""
        if name not in topics.COMMANDS:
            return  # an unknown name is no topic to answer on; the refusal is in the log and telemetry
        state = "refused" if refused else ("accepted" if name == "capture" else "done")
        result = CommandResult(id=cmd_id, name=name, state=state, reason=refused,  # type: ignore[arg-type]
                               at=datetime.now(UTC))
        self.link.publish(topics.cmd_result(self.cfg.device_id, name), result.to_json_bytes(), qos=1)

    def _refuse(self, refused: Refused) -> str:
        self.stats.commands_refused += 1
        self.error("%s", refused)
        self.publish_telemetry()
        return refused.reason

    def _reload(self) -> str | None:
        try:
            cfg = load_edge_config(self.config_path)
        except ConfigError as exc:
            return self._refuse(Refused("reload", f"config not reloaded, the old one stays: {exc}"))
        fixed = {k for k in ("device_id", "state_dir", "mqtt") if getattr(cfg, k) != getattr(self.cfg, k)}
        if fixed:
            log.warning("reload: %s changed; that takes a restart (systemctl restart meter-edge)",
                        ", ".join(sorted(fixed)))
            cfg = cfg.model_copy(update={k: getattr(self.cfg, k) for k in fixed})
        try:
            reader = self.reader_factory(cfg)
        except Exception as exc:
            return self._refuse(Refused("reload", f"layout/model not reloaded, the old ones stay: {exc}"))
        self.reader.close()
        self.reader, self.cfg = reader, cfg
        self.session.ack_timeout_s = cfg.ack_timeout_s
        self._capturing = True
        now = time.monotonic()
        self._next_cycle = min(self._next_cycle, now + cfg.interval_s)
        self._next_telemetry = min(self._next_telemetry, now + cfg.telemetry_interval_s)
        if self.link.connected:
            self.publish_discovery()  # ha.name, ha.configuration_url or mqtt.ha_discovery may have changed
        log.info("reloaded config and layout (interval %.3gs)", cfg.interval_s)
        return None

    def local_request(self, *, at_start: bool = False) -> None:
        """Apply the setup page's request: reload (the config and layout just loaded, at start), then the
        starting value, as `cmd/reload` and `cmd/set-value` would; the answer goes to state_dir."""
        request = local.take_request(self.cfg.state_dir)
        if request is None:
            log.info("SIGHUP: reloading the config and layout")
            self._reload()
            return
        if isinstance(request, str):
            self._refuse(Refused("setup request", request))
            local.write_result(self.cfg.state_dir, local.result_now(None, "refused", request, "not asked", None,
                                                                    datetime.now(UTC)))
            return
        log.info("setup page's request %s: reload%s", request.id,
                 f" and starting value {request.set_value.value}" if request.set_value else "")
        self.watchdog.notify("RELOADING=1")
        reload_reason = None if at_start or not request.reload else self._reload()
        reload: local.Outcome = "refused" if reload_reason else ("done" if request.reload or at_start else "not asked")
        set_value: local.Outcome = "not asked"
        set_reason: str | None = None
        if request.set_value is not None:
            if reload_reason:
                set_value, set_reason = "refused", "not set: the layout it belongs to was not reloaded"
            else:
                set_reason = self._set_value(Command("set-value", request.set_value, request.id))
                set_value = "refused" if set_reason else "done"
        self.watchdog.notify("READY=1")
        local.write_result(self.cfg.state_dir, local.result_now(request.id, reload, reload_reason, set_value,
                                                                set_reason, datetime.now(UTC)))

    def _set_value(self, cmd: Command) -> str | None:
        assert cmd.set_value is not None
        at = cmd.set_value.at or datetime.now(UTC)
        try:
            state = self.reader.set_previous(self.outbox.reading_state(), cmd.set_value.value, at)
        except Exception as exc:  # whatever a command carries, it must not stop the agent
            return self._refuse(Refused("set-value", f"{type(exc).__name__}: {exc}"[:300]))
        self.outbox.set_reading_state(state)
        self.meter_state.set_value(cmd.set_value.value, at)
        self.publish_state()
        log.info("set-value: previous accepted value is now %s (at %s)", cmd.set_value.value, at.isoformat())
        return None

    # -- telemetry and discovery ----------------------------------------------------------------
    def telemetry(self) -> Any:
        return build_telemetry(
            uptime_s=time.monotonic() - self.started,
            outbox_depth=self.outbox.depth(),
            outbox_dropped=self.outbox.dropped(),
            outbox_rejected=self.outbox.rejected(),
            last_error=self.stats.last_error,
            state_dir=self.cfg.state_dir,
            disk_full=self.outbox.disk_full,
            model=self.reader.model_id,
            version=__version__,
            last_seq=self.outbox.last_seq(),
            commands_refused=self.stats.commands_refused,
            reanchors=int((self.outbox.reading_state() or {}).get("reanchors", 0)),
            stall_reconnects=self.session.stall_reconnects,
        )

    def publish_telemetry(self) -> None:
        self.link.publish(topics.telemetry(self.cfg.device_id), self.telemetry().to_json_bytes(), qos=0, retain=True)

    def publish_discovery(self) -> None:
        """Discovery configs (retained); with `mqtt.ha_discovery = false`, empty retained messages on the
        same topics, which remove the entities from Home Assistant and the configs from the broker."""
        did = self.cfg.device_id
        if not self.cfg.mqtt.ha_discovery:
            for topic in discovery.removal_topics(did):
                self.link.publish(topic, b"", qos=1, retain=True)
            return
        messages = discovery.discovery_messages(did, version=__version__, name=self.cfg.ha.name or None,
                                                configuration_url=self.cfg.ha.configuration_url or None)
        for topic, config in messages.items():
            self.link.publish(topic, config.to_json_bytes(), qos=1, retain=True)
