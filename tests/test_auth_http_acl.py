"""The "http" authorization source through the broker (issue 5, M2): PUBLISH and SUBSCRIBE
wait for its answer without holding up the broker, in packet order, with decisions cached
per client; an error, a timeout or a server that is down denies."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from auth_helpers import secured_broker
from conftest import free_port
from mqtt_raw import CONNACK, PUBACK, PUBLISH, RawClient, connect_packet, publish_packet

pytestmark = pytest.mark.rampart_only

RC_NOT_AUTHORIZED = 0x87


class AclServer:
    """A local HTTP ACL endpoint: topics under allowed/ are allowed, under slow/ answered
    after 5 s (past the broker's timeout), under ignore/ ignored, under broken/ answered
    with HTTP 500, the rest denied. Records every request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                topic = body["topic"]
                if topic.startswith("slow/"):
                    time.sleep(5)
                if topic.startswith("broken/"):
                    self.send_response(500)
                    self.end_headers()
                    return
                result = ("allow" if topic.startswith(("allowed/", "slow/"))
                          else "ignore" if topic.startswith("ignore/") else "deny")
                data = json.dumps({"result": result}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def asked(self, topic: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r["topic"] == topic)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def acl_toml(url: str) -> str:
    return f"""
[acl]
sources = ["identity", "http"]
http_url = "{url}"
http_timeout_ms = 1500
cache_ttl_secs = 60
"""


@pytest.fixture
def acl_server():
    s = AclServer()
    yield s
    s.stop()


@pytest.fixture
def http_broker(broker_factory, acl_server):
    return secured_broker(broker_factory, acl_toml(f"http://127.0.0.1:{acl_server.port}/acl"),
                          [("alice", "alice-pw", ["--acl", "allow publish own/#"])])


def client(broker, version=5, client_id="alice-1"):
    c = RawClient(broker.host, broker.port, version)
    c.connect(client_id, username="alice", password="alice-pw")
    return c


def test_publish_and_subscribe_ask_the_http_source(http_broker, acl_server):
    c = client(http_broker)
    assert c.subscribe([("allowed/#", 1), ("denied/#", 1), ("slow/#", 1),
                        ("ignore/#", 1), ("broken/#", 1)]).reasons == [1, 0x87, 0x87, 0x87, 0x87]
    # Ignore goes on to the next source; there is none, so the final deny decides.
    assert c.publish("allowed/a", b"1", qos=1).reason == 0
    assert c.expect(PUBLISH).topic == "allowed/a"
    assert c.publish("denied/a", b"1", qos=1, pid=2).reason == RC_NOT_AUTHORIZED
    t = time.monotonic()
    assert c.publish("slow/a", b"1", qos=1, pid=3).reason == RC_NOT_AUTHORIZED
    assert time.monotonic() - t < 4, "the timeout (1.5 s) decides, not the slow server"
    assert c.publish("broken/a", b"1", qos=1, pid=4).reason == RC_NOT_AUTHORIZED
    body = next(r for r in acl_server.requests if r["topic"] == "allowed/a")
    assert body["username"] == "alice" and body["clientid"] == "alice-1"
    assert body["action"] == "publish" and body["qos"] == 1 and body["retain"] is False
    c.ping()
    c.close()


def test_identity_rules_decide_first_without_asking(http_broker, acl_server):
    c = client(http_broker)
    assert c.publish("own/x", b"1", qos=1).reason == 0
    assert acl_server.asked("own/x") == 0
    c.close()


def test_decisions_are_cached_per_client(http_broker, acl_server):
    c = client(http_broker)
    for pid in (1, 2, 3):
        assert c.publish("allowed/cached", b"x", qos=1, pid=pid).reason == 0
        assert c.publish("denied/cached", b"x", qos=1, pid=pid + 10).reason == RC_NOT_AUTHORIZED
    assert acl_server.asked("allowed/cached") == 1
    assert acl_server.asked("denied/cached") == 1
    c.close()
    # Another connection has its own cache.
    c = client(http_broker, client_id="alice-2")
    assert c.publish("allowed/cached", b"x", qos=1).reason == 0
    assert acl_server.asked("allowed/cached") == 2
    c.close()


def test_packet_order_is_kept_while_waiting(http_broker, acl_server):
    sub = client(http_broker, client_id="watcher")
    assert sub.subscribe([("allowed/#", 1)]).reasons == [1]
    c = client(http_broker)
    # One write: a decision that takes the server a while, then ones that are quick.
    c.send(publish_packet("allowed/o/1", b"1", qos=1, pid=1)
           + publish_packet("denied/o/2", b"2", qos=1, pid=2)
           + publish_packet("allowed/o/3", b"3", qos=1, pid=3)
           + publish_packet("own/o/4", b"4", qos=1, pid=4))
    acks = [c.expect(PUBACK) for _ in range(4)]
    assert [(a.pid, a.reason) for a in acks] == [(1, 0), (2, 0x87), (3, 0), (4, 0)]
    got = []
    for _ in range(2):
        p = sub.expect(PUBLISH)
        sub.ack(p)
        got.append(p.payload)
    assert got == [b"1", b"3"]
    # The broker serves other clients while one waits for the slow server.
    slow = client(http_broker, client_id="alice-slow")
    slow.send(publish_packet("slow/s", b"s", qos=1, pid=7))
    t = time.monotonic()
    c.ping()
    assert time.monotonic() - t < 1.0, "answered while the other client's decision waits"
    assert slow.expect(PUBACK).reason == RC_NOT_AUTHORIZED
    c.close()
    slow.close()
    sub.close()


def test_mqtt311_denied_publish_is_acknowledged_and_dropped(http_broker, acl_server):
    sub = client(http_broker, client_id="watcher")
    assert sub.subscribe([("allowed/#", 1)]).reasons == [1]
    c = client(http_broker, version=4, client_id="v3")
    assert c.publish("denied/v3", b"x", qos=1).reason == 0
    assert c.publish("allowed/v3", b"y", qos=1, pid=2).reason == 0
    assert sub.expect(PUBLISH).payload == b"y"
    c.close()
    sub.close()


def test_will_topic_is_authorized_by_the_http_source(http_broker, acl_server):
    c = RawClient(http_broker.host, http_broker.port, 5)
    c.send(connect_packet("w1", 5, username="alice", password="alice-pw",
                          will={"topic": "denied/will", "payload": b"x"}))
    assert c.expect(CONNACK).reason == RC_NOT_AUTHORIZED
    c.close()
    c = RawClient(http_broker.host, http_broker.port, 5)
    c.send(connect_packet("w2", 5, username="alice", password="alice-pw",
                          will={"topic": "allowed/will", "payload": b"x"}))
    assert c.expect(CONNACK).reason == 0
    c.close()


def test_server_down_denies(broker_factory):
    b = secured_broker(broker_factory, acl_toml(f"http://127.0.0.1:{free_port()}/acl"),
                       [("alice", "alice-pw", [])])
    c = client(b)
    assert c.publish("allowed/a", b"1", qos=1).reason == RC_NOT_AUTHORIZED
    assert c.subscribe([("allowed/#", 0)]).reasons == [RC_NOT_AUTHORIZED]
    c.close()
