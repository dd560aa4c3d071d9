"""MQTT 3.1.1 conformance: normative statements the other test files do not already cover.

Each test names the behaviour and cites the statement ([MQTT-x.y.z-n], 3.1.1 numbering) in
its docstring. Raw packets throughout; a 3.1.1 server never sends DISCONNECT, so a violation
shows as a closed connection. Absence is proved with a barrier (a later message that must
arrive first), never with a sleep.
"""

import pytest

from mqtt_client import unique_id
from mqtt_raw import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, UNSUBACK,
                      Closed, RawClient, ack_packet, connect_packet, mstr, packet, pingreq_packet,
                      publish_packet, raw, subscribe_packet, u16, unsubscribe_packet)

V = 4


def uid(prefix):
    return unique_id(prefix)


def barrier(pub, sub, topic):
    """Publishes a marker on `topic` (which `sub` subscribes) and returns the next PUBLISH
    `sub` receives: anything that should not have arrived would come before it."""
    pub.publish(topic, b"barrier", qos=1, pid=999)
    return sub.expect(PUBLISH)


def closes(broker, data: bytes, connected: bool = True):
    """Sends `data` (after a successful CONNECT if `connected`) and requires the server to
    close the connection without sending a DISCONNECT or a successful CONNACK."""
    with RawClient(broker.host, broker.port, V) as c:
        if connected:
            c.connect(uid("bad"))
        c.try_send(data)
        while True:
            try:
                p = c.read()
            except Closed:
                return
            assert not (p.type == CONNACK and p.reason == 0), "CONNECT accepted"


def persistent(c, cid):
    return c.connect(cid, clean=False)


# ---- UTF-8 strings (1.5.3) ----------------------------------------------------------------------

@pytest.mark.parametrize("topic", [b"a/\xc0\xaf", b"a/\xe0\x80\xaf", b"a/\xf4\x90\x80\x80",
                                   b"a/\xed\xbf\xbf"],
                         ids=["overlong-2", "overlong-3", "above-U+10FFFF", "surrogate"])
def test_ill_formed_utf8_topic_closes(broker, topic):
    """[MQTT-1.5.3-1] ill-formed UTF-8 (overlong forms, code points above U+10FFFF,
    surrogates) in a topic name closes the connection."""
    closes(broker, publish_packet(topic, b"x", version=V))


def test_ill_formed_utf8_client_id_closes(broker):
    """[MQTT-1.5.3-1] ill-formed UTF-8 in the CONNECT client identifier: no session, close."""
    closes(broker, connect_packet(b"id\xff", V), connected=False)


def test_ill_formed_utf8_username_closes(broker):
    """[MQTT-1.5.3-1] ill-formed UTF-8 in the User Name: the CONNECT is not accepted."""
    closes(broker, connect_packet(uid("u"), V, username=b"\xc3\x28"), connected=False)


def test_ill_formed_utf8_will_topic_closes(broker):
    """[MQTT-1.5.3-1] ill-formed UTF-8 in the Will Topic: the CONNECT is not accepted."""
    closes(broker, connect_packet(uid("w"), V, will={"topic": b"w/\xff"}), connected=False)


def test_nul_in_topic_filter_closes(broker):
    """[MQTT-1.5.3-2] U+0000 in a topic filter closes the connection."""
    closes(broker, subscribe_packet(1, [(b"a/\x00", 0)], version=V))


def test_bom_is_part_of_the_topic(broker):
    """[MQTT-1.5.3-3] U+FEFF is a character like any other: it is not skipped or stripped, so
    "\\ufeffbom/t" and "bom/t" are different topics."""
    with raw(broker, V, uid("boms")) as sub, raw(broker, V, uid("bomp")) as pub:
        sub.subscribe([("\ufeffbom/t", 1), ("bom/end", 1)])
        pub.publish("bom/t", b"plain", qos=1)
        pub.publish("\ufeffbom/t", b"bom", qos=1)
        m = sub.expect(PUBLISH)
        assert (m.topic, m.payload) == ("\ufeffbom/t", b"bom")
        sub.ack(m)


# ---- CONNECT / CONNACK --------------------------------------------------------------------------

def test_will_retain_without_will_flag_is_refused(broker):
    """[MQTT-3.1.2-15] Will Flag 0 requires Will Retain 0: the CONNECT is refused (close)."""
    body = mstr("MQTT") + bytes([4, 0x02 | 0x20]) + u16(60) + mstr(uid("wr"))
    closes(broker, packet(1, 0, body), connected=False)


def test_refused_connack_has_session_present_zero(broker):
    """[MQTT-3.2.2-4] a CONNACK with a non-zero return code has Session Present 0, and the
    connection is closed [MQTT-3.2.2-5]."""
    with RawClient(broker.host, broker.port, V) as c:
        c.send(connect_packet("", V, clean=False))
        ack = c.expect(CONNACK)
        assert ack.reason == 0x02 and not ack.session_present
        assert ack.body == b"\x00\x02"
        c.expect_closed()


def test_connack_body_is_two_bytes(broker):
    """3.2: the 3.1.1 CONNACK is exactly two bytes (flags, return code); [MQTT-3.2.2-1]
    reserved flag bits are 0."""
    with RawClient(broker.host, broker.port, V) as c:
        ack = c.connect(uid("ca"))
        assert ack.body == b"\x00\x00"


def test_packets_pipelined_behind_connect_are_handled(broker):
    """4.2/[MQTT-3.1.4-5]: a client may send packets right after CONNECT without waiting for
    CONNACK; the server processes them in order after accepting the connection."""
    with RawClient(broker.host, broker.port, V) as c:
        cid = uid("pipe")
        c.send(connect_packet(cid, V) + subscribe_packet(1, [("pipe/t", 1)], version=V)
               + publish_packet("pipe/t", b"a", qos=1, pid=2, version=V) + pingreq_packet())
        assert c.expect(CONNACK).reason == 0
        types = []
        for _ in range(4):
            p = c.read()
            types.append(p.type)
            if p.type == PUBLISH:
                c.ack(p)
        assert sorted(types) == sorted([SUBACK, PUBACK, PUBLISH, 13]), types
        assert types.index(SUBACK) < types.index(PUBLISH)


def test_connect_split_byte_by_byte(broker):
    """2.2.3/4.2: a CONNECT that arrives one byte at a time is accepted."""
    with RawClient(broker.host, broker.port, V) as c:
        data = connect_packet(uid("split"), V)
        for i in range(len(data)):
            c.send(data[i:i + 1])
        assert c.expect(CONNACK).reason == 0
        c.ping()


# ---- PUBLISH ------------------------------------------------------------------------------------

def test_dup_flag_of_incoming_publish_not_propagated(broker):
    """[MQTT-3.3.1-3] the DUP flag of an incoming PUBLISH is not propagated: the server sets
    it on its outgoing PUBLISH only for its own re-deliveries."""
    with raw(broker, V, uid("dups")) as sub, raw(broker, V, uid("dupp")) as pub:
        sub.subscribe([("dupf/t", 1)])
        pub.publish("dupf/t", b"x", qos=1, pid=4, dup=True)
        m = sub.expect(PUBLISH)
        assert m.payload == b"x" and not m.dup
        sub.ack(m)


def test_publish_without_retain_leaves_retained_message(broker):
    """[MQTT-3.3.1-12] a PUBLISH with RETAIN 0 neither stores nor replaces the retained
    message of its topic."""
    with raw(broker, V, uid("rnp")) as pub:
        pub.publish("rn/t", b"kept", qos=1, retain=True)
        pub.publish("rn/t", b"live", qos=1)
        with raw(broker, V, uid("rns")) as sub:
            sub.subscribe([("rn/t", 1)])
            m = sub.expect(PUBLISH)
            assert (m.payload, m.retain) == (b"kept", True)
            sub.ack(m)
        pub.publish("rn/t", b"", qos=1, retain=True)


def test_zero_byte_retained_publish_is_delivered_and_clears(broker):
    """[MQTT-3.3.1-10]/[MQTT-3.3.1-11] a retained PUBLISH with an empty payload is forwarded
    to current subscribers as normal, removes the retained message and is not stored
    itself."""
    with raw(broker, V, uid("zrs")) as sub, raw(broker, V, uid("zrp")) as pub:
        pub.publish("zr/t", b"old", qos=1, retain=True)
        sub.subscribe([("zr/t", 1)])
        sub.ack(sub.expect(PUBLISH))
        pub.publish("zr/t", b"", qos=1, retain=True)
        m = sub.expect(PUBLISH)
        assert m.payload == b"" and not m.retain
        sub.ack(m)
    with raw(broker, V, uid("zrn")) as late, raw(broker, V, uid("zrp2")) as pub:
        late.subscribe([("zr/t", 1)])
        m = barrier(pub, late, "zr/t")
        assert m.payload == b"barrier" and not m.retain


def test_retained_will(broker):
    """[MQTT-3.1.2-17] a will with Will Retain 1 is published as a retained message."""
    topic = f"rw/{uid('t')}"
    watcher = raw(broker, V, uid("rww"))
    watcher.subscribe([(topic, 1)])
    c = raw(broker, V, uid("rwc"), will={"topic": topic, "payload": b"bye", "qos": 1,
                                         "retain": True})
    c.close()  # abnormal: the will is published
    live = watcher.expect(PUBLISH)  # published (and so retained) by now
    assert live.payload == b"bye"
    watcher.ack(live)
    watcher.close()
    with raw(broker, V, uid("rws")) as sub:
        sub.subscribe([(topic, 1)])
        m = sub.expect(PUBLISH)
        assert (m.payload, m.retain) == (b"bye", True)
        sub.ack(m)
    with raw(broker, V, uid("rwx")) as c:
        c.publish(topic, b"", qos=1, retain=True)


def test_empty_topic_name_closes(broker):
    """[MQTT-4.7.3-1] a topic name is at least one character: an empty one closes."""
    closes(broker, publish_packet("", b"x", qos=1, pid=1, version=V))


def test_redelivery_on_reconnect_keeps_original_order(broker):
    """[MQTT-4.6.0-1]/[MQTT-4.4.0-1] unacknowledged QoS 1 and 2 messages are re-sent on
    reconnect in the order they were first sent, with DUP 1 and their packet ids."""
    cid = uid("order")
    sub = raw(broker, V)
    persistent(sub, cid)
    sub.subscribe([("ord/t", 2)])
    with raw(broker, V, uid("ordp")) as pub:
        for i, q in enumerate([1, 2, 1, 2]):
            pub.publish("ord/t", bytes([i]), qos=q, pid=10 + i)
    first = [sub.expect(PUBLISH) for _ in range(4)]
    assert [m.payload for m in first] == [b"\x00", b"\x01", b"\x02", b"\x03"]
    sub.close()
    with raw(broker, V) as again:
        assert persistent(again, cid).session_present
        re = [again.expect(PUBLISH) for _ in range(4)]
        assert [(m.payload, m.pid, m.qos) for m in re] == \
            [(m.payload, m.pid, m.qos) for m in first]
        assert all(m.dup for m in re)
        for m in re:
            again.ack(m)
        again.finish()
    with raw(broker, V) as c:
        c.connect(cid, clean=True)


def test_qos2_publish_then_pubrel_before_pubrec_read(broker):
    """4.3.3: the receiver may send PUBREL as soon as it has PUBREC; PUBREC and PUBCOMP carry
    the PUBLISH's packet id [MQTT-2.3.1-6]."""
    with raw(broker, V, uid("q2")) as c:
        c.send(publish_packet("q2/t", b"x", qos=2, pid=321, version=V))
        assert c.expect(PUBREC).pid == 321
        c.send(ack_packet(PUBREL, 321, version=V))
        assert c.expect(PUBCOMP).pid == 321


# ---- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------------

def test_repeated_filter_in_one_subscribe_acts_as_sequence(broker):
    """[MQTT-3.8.4-4] a SUBSCRIBE with several filters is handled like a sequence of
    SUBSCRIBEs: the same filter twice leaves one subscription with the last QoS, and one
    return code per filter."""
    with raw(broker, V, uid("rfs")) as sub, raw(broker, V, uid("rfp")) as pub:
        ack = sub.subscribe([("rep/t", 0), ("rep/t", 2)])
        assert ack.reasons == [0, 2]
        pub.publish("rep/t", b"x", qos=2, pid=3)
        m = sub.expect(PUBLISH)
        assert m.qos == 2
        sub.ack(m)
        sub.finish()
        assert barrier(pub, sub, "rep/t").payload == b"barrier"


def test_unsubscribe_several_filters_in_one_packet(broker):
    """[MQTT-3.10.4-6] an UNSUBSCRIBE with several filters is processed as a sequence and
    answered by one UNSUBACK."""
    with raw(broker, V, uid("uss")) as sub, raw(broker, V, uid("usp")) as pub:
        sub.subscribe([("us/a", 1), ("us/b", 1), ("us/end", 1)])
        sub.send(unsubscribe_packet(9, ["us/a", "us/b", "never"], version=V))
        assert sub.expect(UNSUBACK).pid == 9
        pub.publish("us/a", b"a", qos=1)
        pub.publish("us/b", b"b", qos=1)
        assert barrier(pub, sub, "us/end").payload == b"barrier"


def test_empty_topic_filter_is_refused(broker):
    """[MQTT-4.7.3-1] a topic filter is at least one character: SUBACK 0x80 or close."""
    with raw(broker, V, uid("ef")) as c:
        c.try_send(subscribe_packet(1, [("", 0)], version=V))
        try:
            ack = c.expect(SUBACK)
        except Closed:
            return
        assert ack.reasons == [0x80]


def test_suback_return_codes_are_valid(broker):
    """[MQTT-3.9.3-2] SUBACK return codes are 0x00, 0x01, 0x02 or 0x80 only; an invalid filter
    gets 0x80 (or, as a protocol violation, a close)."""
    with raw(broker, V, uid("rc")) as c:
        assert c.subscribe([("ok/+", 2), ("ok/#", 0)]).reasons == [2, 0]
        c.send(subscribe_packet(2, [("ok/a", 1), ("bad/#/x", 1)], version=V))
        try:
            ack = c.expect(SUBACK)
        except Closed:
            return
        assert ack.reasons == [1, 0x80]


# ---- refused CONNECT, retained state ------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_nothing_after_a_refused_connect_is_processed(broker, version):
    """[MQTT-3.1.4-5] (v5 [MQTT-3.1.4-6]) a server that refuses a CONNECT processes none of
    the data the client sent after it: a retained PUBLISH pipelined behind it is not stored."""
    topic = f"refused/{uid('t')}"
    bad = connect_packet("", version, clean=False) if version == 4 else \
        connect_packet(uid("r"), 5, props=[("receive_maximum", 0)])
    with RawClient(broker.host, broker.port, version) as c:
        c.send(bad + publish_packet(topic, b"smuggled", qos=0, retain=True, version=version))
        try:
            ack = c.read()
        except Closed:  # a close without CONNACK is a refusal too
            return
        assert ack.type == CONNACK and ack.reason != 0, ack
        c.expect_closed()
    with raw(broker, V, uid("rfs")) as sub, raw(broker, V, uid("rfp")) as pub:
        sub.subscribe([(topic, 1)])
        m = barrier(pub, sub, topic)
        assert m.payload == b"barrier", f"the PUBLISH after a refused CONNECT was processed: {m!r}"


def test_retained_message_outlives_the_publishers_session(broker):
    """[MQTT-3.1.2-7] retained messages are not part of the session state: they are not
    deleted when the publisher's session ends."""
    topic = f"rs/{uid('t')}"
    with raw(broker, V, uid("rsp"), clean=True) as pub:
        pub.publish(topic, b"stays", qos=1, retain=True)
        pub.disconnect()
    with raw(broker, V, uid("rss")) as sub:
        sub.subscribe([(topic, 0)])
        m = sub.expect(PUBLISH)
        assert (m.payload, m.retain) == (b"stays", True)
    with raw(broker, V, uid("rsx")) as c:
        c.publish(topic, b"", qos=1, retain=True)


def test_qos0_retained_publish_replaces_retained_message(broker):
    """[MQTT-3.3.1-7] a retained QoS 0 PUBLISH discards the message retained before it and
    (SHOULD) becomes the retained message."""
    topic = f"r0/{uid('t')}"
    with raw(broker, V, uid("r0p")) as pub:
        pub.publish(topic, b"q1", qos=1, retain=True)
        pub.publish(topic, b"q0", qos=0, retain=True)
        pub.ping()  # the QoS 0 PUBLISH was handled before PINGRESP
        with raw(broker, V, uid("r0s")) as sub:
            sub.subscribe([(topic, 1)])
            m = sub.expect(PUBLISH)
            assert (m.payload, m.qos, m.retain) == (b"q0", 0, True)
        pub.publish(topic, b"", qos=1, retain=True)


# ---- MQTT over WebSocket (section 6) ------------------------------------------------------------

class WsRaw:
    """MQTT over a hand-driven WebSocket: the test chooses the frame boundaries."""

    def __init__(self, port: int):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(
            b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, "closed during the upgrade"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.raw = b""   # undecoded WebSocket bytes
        self.mqtt = b""  # MQTT bytes from binary frames
        self.closed = False

    def frame(self, payload: bytes, opcode: int = 0x2) -> None:
        """One masked client frame (FIN set)."""
        import os
        import struct
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        else:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def _frames(self) -> None:
        while len(self.raw) >= 2:
            op, n, i = self.raw[0] & 0x0F, self.raw[1] & 0x7F, 2
            if n == 126:
                if len(self.raw) < 4:
                    return
                n, i = int.from_bytes(self.raw[2:4], "big"), 4
            elif n == 127:
                if len(self.raw) < 10:
                    return
                n, i = int.from_bytes(self.raw[2:10], "big"), 10
            if len(self.raw) < i + n:
                return
            payload, self.raw = self.raw[i:i + n], self.raw[i + n:]
            if op == 0x2 or op == 0x0:
                self.mqtt += payload
            elif op == 0x8:
                self.closed = True

    def read(self, timeout: float = 5.0):
        """The next MQTT packet; raises EOFError once the server closed."""
        from mqtt_raw import decode
        import time
        deadline = time.monotonic() + timeout
        while True:
            if len(self.mqtt) >= 2 and self.mqtt[1] < 0x80 and len(self.mqtt) >= 2 + self.mqtt[1]:
                n = self.mqtt[1]
                first, body, self.mqtt = self.mqtt[0], self.mqtt[2:2 + n], self.mqtt[2 + n:]
                return decode(first >> 4, first & 0x0F, body, V)
            if self.closed:
                raise EOFError("WebSocket closed")
            left = deadline - time.monotonic()
            assert left > 0, "no packet before the deadline"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.raw += chunk
            self._frames()

    def close(self):
        self.sock.close()


@pytest.fixture
def ws_broker(broker_factory):
    from conftest import free_port
    from tls_fixtures import listener_toml
    port = free_port()
    b = broker_factory(extra_toml=listener_toml("ws", "ws", port, ws_path="/mqtt"))
    b.ws_port = port
    return b


@pytest.mark.rampart_only  # the peer config has no WebSocket listener here
def test_websocket_frames_need_not_align_with_packets(ws_broker):
    """[MQTT-6.0.0-2] a WebSocket frame may hold part of a packet or several packets: the
    server does not assume any alignment."""
    c = WsRaw(ws_broker.ws_port)
    try:
        conn = connect_packet(uid("ws"), V)
        c.frame(conn[:5])
        c.frame(conn[5:] + subscribe_packet(1, [("ws/t", 0)], version=V) + pingreq_packet()[:1])
        c.frame(pingreq_packet()[1:])
        assert c.read().type == CONNACK
        assert c.read().type == SUBACK
        assert c.read().type == 13  # PINGRESP
        pub = publish_packet("ws/t", b"framed", version=V)
        for i in range(len(pub)):
            c.frame(pub[i:i + 1])
        m = c.read()
        assert (m.type, m.payload) == (PUBLISH, b"framed")
    finally:
        c.close()


@pytest.mark.rampart_only
def test_websocket_text_frame_closes_the_connection(ws_broker):
    """[MQTT-6.0.0-1] MQTT travels in binary frames only: a text frame closes the
    connection."""
    c = WsRaw(ws_broker.ws_port)
    try:
        c.frame(connect_packet(uid("wst"), V))
        assert c.read().type == CONNACK
        # A valid PUBLISH whose bytes are valid UTF-8 too: only the frame type is wrong.
        c.frame(publish_packet("ws/a", b"x", version=V), opcode=0x1)
        with pytest.raises(EOFError):
            c.read()
    finally:
        c.close()


@pytest.mark.rampart_only
def test_websocket_control_frames_between_packets(ws_broker):
    """6.0 / RFC 6455: WebSocket ping frames between (and inside) MQTT packets are answered
    by the WebSocket layer and do not disturb the MQTT stream."""
    c = WsRaw(ws_broker.ws_port)
    try:
        conn = connect_packet(uid("wsp"), V)
        c.frame(conn[:3])
        c.frame(b"hi", opcode=0x9)  # ping in the middle of CONNECT
        c.frame(conn[3:])
        assert c.read().type == CONNACK
        c.frame(b"", opcode=0x9)
        c.frame(pingreq_packet())
        assert c.read().type == 13
    finally:
        c.close()
