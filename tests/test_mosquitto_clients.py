"""Interop with the mosquitto_pub / mosquitto_sub command-line clients, MQTT 5 and 3.1.1."""

import shutil
import subprocess
import threading

import pytest

PUB = shutil.which("mosquitto_pub")
SUB = shutil.which("mosquitto_sub")
pytestmark = pytest.mark.skipif(not (PUB and SUB), reason="mosquitto-clients not installed")

PROTOCOLS = ["mqttv5", "mqttv311"]


class MosquittoSub:
    """mosquitto_sub in the background; started() returns once its SUBACK arrived (-d)."""

    def __init__(self, broker, *args, count=1, wait=10):
        # Line-buffered stdout (stdbuf), so the SUBACK debug line is seen while it runs.
        stdbuf = [shutil.which("stdbuf"), "-oL"] if shutil.which("stdbuf") else []
        self.proc = subprocess.Popen(
            stdbuf + [SUB, "-h", broker.host, "-p", str(broker.port), "-d", "-C", str(count),
             "-W", str(wait), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.subscribed.wait(10), "mosquitto_sub did not subscribe:\n" + "".join(self.lines)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if "received suback" in line.lower():
                self.subscribed.set()

    def output(self, timeout=15):
        """The message lines (debug lines removed) once mosquitto_sub exits."""
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        assert rc == 0, f"mosquitto_sub exit {rc}:\n" + "".join(self.lines)
        return [l.rstrip("\n") for l in self.lines
                if not l.startswith("Client ") and not l.startswith("Subscribed")]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def mpub(broker, *args, timeout=15):
    r = subprocess.run([PUB, "-h", broker.host, "-p", str(broker.port), *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"mosquitto_pub {args}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


@pytest.mark.parametrize("sub_v", PROTOCOLS)
@pytest.mark.parametrize("pub_v", PROTOCOLS)
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_pub_sub(broker, pub_v, sub_v, qos):
    s = MosquittoSub(broker, "-V", sub_v, "-q", qos, "-t", "cli/#", "-v")
    try:
        mpub(broker, "-V", pub_v, "-q", qos, "-t", "cli/x", "-m", "hello world")
        assert s.output() == ["cli/x hello world"]
    finally:
        s.kill()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_retained(broker, proto):
    mpub(broker, "-V", proto, "-q", "1", "-r", "-t", "cli/ret", "-m", "kept")
    s = MosquittoSub(broker, "-V", proto, "-t", "cli/ret", "-v")
    try:
        assert s.output() == ["cli/ret kept"]
    finally:
        s.kill()
    mpub(broker, "-V", proto, "-r", "-t", "cli/ret", "-n")  # delete


def test_v5_properties(broker):
    """User properties and content type set by mosquitto_pub reach mosquitto_sub (-F format)."""
    s = MosquittoSub(broker, "-V", "mqttv5", "-t", "cli/props", "-F", "%t|%p|%P|%C")
    try:
        mpub(broker, "-V", "mqttv5", "-t", "cli/props", "-m", "body",
             "-D", "publish", "user-property", "k", "v",
             "-D", "publish", "content-type", "text/plain")
        (line,) = s.output()
        topic, payload, user, ctype = line.split("|")
        assert (topic, payload, ctype) == ("cli/props", "body", "text/plain")
        assert "k:v" in user
    finally:
        s.kill()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_file_payload_binary(broker, clients, tmp_path, proto):
    """mosquitto_pub -f sends a binary file intact (received by a paho client)."""
    data = bytes(range(256)) * 256
    f = tmp_path / "payload.bin"
    f.write_bytes(data)
    sub = clients.new()
    sub.subscribe("cli/bin", 1)
    mpub(broker, "-V", proto, "-q", "1", "-t", "cli/bin", "-f", str(f))
    m = sub.expect_message()
    assert m.payload == data and m.qos == 1


def test_paho_to_mosquitto_sub_v311(broker, clients):
    s = MosquittoSub(broker, "-V", "mqttv311", "-q", "2", "-t", "cli/paho", "-v")
    try:
        clients.new(version=4).publish("cli/paho", b"from paho", qos=2)
        assert s.output() == ["cli/paho from paho"]
    finally:
        s.kill()


def test_sys_readable_with_mosquitto_sub(broker):
    """The README tour: mosquitto_sub -t '$SYS/broker/version' gets the version."""
    s = MosquittoSub(broker, "-t", "$SYS/broker/version", "-v")
    try:
        (line,) = s.output()
        assert line.startswith("$SYS/broker/version ")
    finally:
        s.kill()
