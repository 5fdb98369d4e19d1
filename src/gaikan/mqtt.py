"""Verdicts to the line controller over MQTT, with the database as the outbox.

:class:`Publisher` sends one JSON message (:func:`message`) per recorded
inspection to a topic, QoS 1, retained (a controller that connects late
reads the last verdict at once).  What to send is read from the records'
``published`` column and a record is marked published only when the broker
has acknowledged it, so nothing is lost while the broker is down, while
the connection is re-established (paho-mqtt, exponential back-off) or
across a restart of the station.  Delivery is at least once: after a crash
or a reconnect a message may come twice; its ``id`` tells copies apart.

Needs ``paho-mqtt`` (the ``station`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ParameterError

__all__ = ["Publisher", "message", "parse_broker"]

log = logging.getLogger("gaikan.mqtt")


def parse_broker(text: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"host"``, port 1883) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "1883"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(f"--mqtt {text!r}: use HOST:PORT, e.g. localhost:1883")
    return host.strip("[]"), int(port)


def message(rec: Any) -> dict[str, Any]:
    """The JSON message for one record (a :class:`gaikan.records.Record`)."""
    return {
        "id": rec.id,
        "time": rec.created_at.isoformat(),
        "station": rec.station,
        "source": None if rec.source is None else Path(rec.source).name,
        "verdict": rec.verdict,
        "score": rec.score,
        "threshold": rec.threshold,
        "class": rec.cls,
        "confidence": rec.confidence,
        "digest": rec.digest,
        "model": {"id": rec.model_id, "version": rec.model_version},
        "error": rec.error,
    }


class Publisher:
    """Publishes every unpublished record of a store, in order, as it is recorded.

    Parameters
    ----------
    store : RecordStore
    host, port : str, int
        The broker.
    topic : str
    qos : int
        MQTT quality of service (1: at least once).
    retain : bool
        Retain the last verdict on the broker.
    min_delay_s, max_delay_s : float
        Reconnect back-off bounds.
    max_inflight : int
        Messages sent but not yet acknowledged, at most.
    """

    def __init__(
        self,
        store: Any,
        host: str,
        port: int,
        topic: str,
        *,
        qos: int = 1,
        retain: bool = True,
        client_id: str | None = None,
        min_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        max_inflight: int = 100,
        keepalive_s: int = 30,
    ) -> None:
        if not topic or any(c in topic for c in "#+"):
            raise ParameterError(f"--topic {topic!r}: give a topic without wildcards")
        self.store, self.host, self.port, self.topic = store, host, port, topic
        self.qos, self.retain, self.max_inflight = qos, retain, max_inflight
        self.keepalive_s = keepalive_s
        self._delays = (min_delay_s, max_delay_s)
        self.client_id = client_id or f"gaikan-{socket.gethostname()}-{os.getpid()}"
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, tuple[Any, float]] = {}
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self.sent = 0

    # -- life cycle -----------------------------------------------------------
    def start(self) -> Publisher:
        """Connect in the background (retrying while the broker is down) and start sending."""
        import paho.mqtt.client as mqtt

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True
        )
        c.reconnect_delay_set(
            min_delay=max(1, int(self._delays[0])), max_delay=int(self._delays[1])
        )
        c.max_inflight_messages_set(self.max_inflight)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = lambda *a: self._wake.set()
        c.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        c.loop_start()
        self._client = c
        self._thread = threading.Thread(target=self._run, name="gaikan-mqtt", daemon=True)
        self._thread.start()
        return self

    def wake(self, _record_id: int | None = None) -> None:
        """Something was recorded: send it soon (a watcher's ``on_record``)."""
        self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait until every record is acknowledged or ``timeout_s`` passes; return how many are left."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._wake.set()
            if not self.store.outbox_size():
                return 0
            time.sleep(0.05)
        return int(self.store.outbox_size())

    def stop(self) -> None:
        """Stop sending and disconnect (unsent records stay in the outbox)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- callbacks and the sending loop -----------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not getattr(reason, "is_failure", False):
            log.info("connected to the MQTT broker %s:%s", self.host, self.port)
            self._connected.set()
            self._wake.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected.is_set():
            log.warning("lost the MQTT broker %s:%s (%s); retrying", self.host, self.port, reason)
        self._connected.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._pump()
            except Exception:  # the database may be busy or away for a moment: retry
                log.exception("MQTT outbox: will retry")
                self._stop.wait(1.0)

    def _pump(self) -> None:
        now = time.monotonic()
        acked = [i for i, (info, _) in self._inflight.items() if info.is_published()]
        if acked:
            self.store.mark_published(acked)
            for i in acked:
                del self._inflight[i]
        if not self._connected.is_set():
            return
        for i, (_info, t0) in list(self._inflight.items()):
            if now - t0 > 60.0:  # never acknowledged: send it again
                del self._inflight[i]
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for rec in self.store.unpublished(limit=len(self._inflight) + room):
            if rec.id in self._inflight:
                continue
            payload = json.dumps(message(rec), separators=(",", ":"))
            info = self._client.publish(self.topic, payload, qos=self.qos, retain=self.retain)
            self._inflight[rec.id] = (info, now)
            self.sent += 1
