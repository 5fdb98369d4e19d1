"""MQTT output against a real Mosquitto broker started here: nothing lost, even across restarts."""

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
mqtt = pytest.importorskip("paho.mqtt.client")

from click.testing import CliRunner
from PIL import Image

import gaikan
from conftest import structured_images
from gaikan.cli import cli
from gaikan.errors import ParameterError
from gaikan.inspection import Inspection
from gaikan.mqtt import Publisher, message, parse_broker
from gaikan.records import RecordStore

MOSQUITTO = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
needs_broker = pytest.mark.skipif(
    MOSQUITTO is None, reason="no mosquitto binary (apt-get install mosquitto, or .ci/services.sh)"
)
TOPIC = "line/station1"


def wait_for(cond, timeout=20.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


class Broker:
    """A Mosquitto on a free loopback port, with persistence so sessions survive a restart."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\n"
        )
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)])
        assert wait_for(self._listening, 10), "mosquitto did not start"

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A line controller: persistent session, QoS 1, collects every verdict message."""

    def __init__(self, port, client_id="controller"):
        self.messages = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.c.reconnect_delay_set(1, 1)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages.append((json.loads(msg.payload), bool(msg.retain)))

    def ids(self):
        with self.lock:
            return {m["id"] for m, _ in self.messages}

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def record(store, n, start=0):
    return [
        store.add(
            Inspection(
                f"p{start + i}.png", "defect" if i % 4 == 0 else "ok", score=i, threshold=2.5
            ),
            source=f"/cam/p{start + i}.png",
            station="s1",
            image_bytes=f"{start + i}".encode(),
            model_id="cells",
            model_version=2,
        )
        for i in range(n)
    ]


def test_parse_broker_and_message_shape(tmp_path):
    assert parse_broker("10.0.0.5:1884") == ("10.0.0.5", 1884)
    assert parse_broker("broker") == ("broker", 1883)
    with pytest.raises(ParameterError, match="HOST:PORT"):
        parse_broker("host:abc")
    with RecordStore(tmp_path / "r.db") as s:
        with pytest.raises(ParameterError, match="wildcards"):
            Publisher(s, "h", 1, "line/#")
        rec = s.get(record(s, 1)[0])
        m = message(rec)
        assert m["id"] == rec.id and m["verdict"] == "defect" and m["source"] == "p0.png"
        assert m["model"] == {"id": "cells", "version": 2} and m["digest"] == rec.digest
        json.dumps(m)


@needs_broker
def test_broker_restart_mid_run_loses_no_verdict(broker, tmp_path):
    sub = Subscriber(broker.port)
    store = RecordStore(tmp_path / "r.db")
    pub = Publisher(store, "127.0.0.1", broker.port, TOPIC, max_delay_s=1).start()
    ids = record(store, 15)
    pub.wake()
    assert wait_for(lambda: sub.ids() >= set(ids)), "first verdicts not delivered"
    broker.stop()
    assert wait_for(lambda: not pub.connected, 5)
    ids += record(store, 15, start=15)  # recorded while the broker is down
    pub.wake()
    time.sleep(0.3)
    assert store.outbox_size() == 15  # kept in the outbox, not dropped
    broker.start()
    ids += record(store, 10, start=30)
    pub.wake()
    assert wait_for(lambda: sub.ids() >= set(ids) and store.outbox_size() == 0, 30)
    assert sub.ids() == set(ids)  # messages received = verdicts recorded
    pub.stop()
    sub.close()
    late = Subscriber(broker.port, client_id="late")  # a late controller sees the last verdict
    assert wait_for(lambda: late.messages, 5)
    last, retained = late.messages[0]
    assert retained and last["id"] == ids[-1]
    late.close()
    store.close()


@needs_broker
def test_outbox_survives_a_station_restart(broker, tmp_path):
    sub = Subscriber(broker.port)
    store = RecordStore(tmp_path / "r.db")
    broker.stop()
    first = Publisher(store, "127.0.0.1", broker.port, TOPIC, max_delay_s=1).start()
    ids = record(store, 8)
    first.wake()
    assert first.flush(0.5) == 8  # broker down: nothing acknowledged
    first.stop()  # the station stops with its outbox full
    broker.start()
    with Publisher(store, "127.0.0.1", broker.port, TOPIC, max_delay_s=1) as second:
        assert second.flush(20) == 0
    assert wait_for(lambda: sub.ids() == set(ids))
    sub.close()
    store.close()


@needs_broker
def test_watch_publishes_every_verdict(broker, tmp_path):
    sub = Subscriber(broker.port)
    model = tmp_path / "m.gaikan"
    imgs = structured_images(16, seed=0)
    gaikan.SOARTC(kernel=8, stride=4).fit(imgs[:12]).save(model)
    inbox = tmp_path / "in"
    inbox.mkdir()
    for i, im in enumerate(imgs[12:]):
        Image.fromarray(im.astype("uint8")).save(inbox / f"{i}.png")
    (inbox / "junk.png").write_bytes(b"nope")
    db = tmp_path / "r.db"
    args = ["watch", str(inbox), "-m", str(model), "--once", "--db", str(db), "--settle", "0.1"]
    res = CliRunner().invoke(cli, [*args, "--mqtt", f"127.0.0.1:{broker.port}", "--topic", TOPIC])
    assert res.exit_code == 0, res.output
    with RecordStore(db) as s:
        recs = s.query()
        assert len(recs) == 5 and s.outbox_size() == 0
    assert wait_for(lambda: sub.ids() == {r.id for r in recs})
    by_id = {m["id"]: m for m, _ in sub.messages}
    for r in recs:
        assert by_id[r.id]["verdict"] == r.verdict and by_id[r.id]["source"] == Path(r.source).name
    sub.close()
    bad = CliRunner().invoke(cli, [*args, "--mqtt", "localhost:1883"])
    assert bad.exit_code == 2 and "--topic" in bad.output


def _ci_broker():
    """The broker .ci/services.sh started (GAIKAN_TEST_MQTT or its services.env), if any."""
    import os

    addr = os.environ.get("GAIKAN_TEST_MQTT")
    env = Path(os.environ.get("GAIKAN_CI_DIR", "/tmp/gaikan-ci")) / "services.env"
    if not addr and env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith("GAIKAN_TEST_MQTT="):
                addr = line.split("=", 1)[1].strip()
    return addr or None


def test_publishes_to_the_ci_broker(tmp_path):
    addr = _ci_broker()
    if not addr:
        pytest.skip("no shared broker (run `source .ci/services.sh` to start one)")
    host, port = parse_broker(addr)
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        pytest.skip(f"the broker at {addr} is not reachable: {exc}")
    topic = f"gaikan-test/{time.time_ns()}"
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, msg: msg.payload and got.append(json.loads(msg.payload)["id"])
    sub.connect(host, port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    with RecordStore(tmp_path / "r.db") as store:
        ids = record(store, 5)
        with Publisher(store, host, port, topic) as pub:
            assert pub.flush(10) == 0
    assert wait_for(lambda: sorted(set(got)) == ids, 10)
    sub.publish(topic, b"", retain=True).wait_for_publish(5)  # leave no retained message behind
    sub.loop_stop()
    sub.disconnect()
