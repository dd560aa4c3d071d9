//! Black-box tests of the `rampart` binary with rumqttc, a third-party Rust client, over MQTT
//! 3.1.1 and 5.0: QoS 0/1/2 round trips, retained messages and wills. Each test starts its own
//! broker on a free loopback port with a temporary config and data dir.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bound on every wait for a network event.
const WAIT: Duration = Duration::from_secs(10);

struct Broker {
    child: Child,
    port: u16,
    /// The broker's output, printed only when a test fails.
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        // The OS picks a free port; the tiny window before the broker binds it is acceptable
        // for tests, and a clash shows up as a start failure, not a wrong result.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let data = dir.path().join("data");
        let config: PathBuf = dir.path().join("rampart.toml");
        let mut f = std::fs::File::create(&config).expect("config file");
        write!(
            f,
            "[node]\ndata_dir = {data:?}\n\n[[listeners]]\nname = \"test\"\nkind = \"tcp\"\n\
             bind = \"127.0.0.1:{port}\"\n\n[mqtt]\nmax_packet_size = 1048576\n\n\
             [storage]\nbackend = \"memory\"\n\n[sys]\ninterval_secs = 1\n\n[log]\nlevel = \"info\"\n",
            data = data.display().to_string(),
        )
        .expect("write config");
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log));
        // RAMPART_* variables are config overrides; the caller's must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RAMPART_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn rampart");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("rampart exited at start: {status}\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rampart did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20)); // polling the port, bounded above
        }
        Broker {
            child,
            port,
            log_path,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            eprintln!("---- rampart log ----\n{log}");
        }
    }
}

/// What a client's event loop saw, forwarded to the test.
#[derive(Debug, PartialEq)]
enum Ev {
    SubAck,
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
    },
    Done,
}

struct Conn<C> {
    client: C,
    events: mpsc::UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
}

impl<C> Conn<C> {
    async fn next(&mut self) -> Ev {
        timeout(WAIT, self.events.recv())
            .await
            .expect("no event within the bound")
            .expect("event loop ended")
    }

    async fn next_publish(&mut self) -> Ev {
        loop {
            let ev = self.next().await;
            if matches!(ev, Ev::Publish { .. }) {
                return ev;
            }
        }
    }

    async fn wait_suback(&mut self) {
        while self.next().await != Ev::SubAck {}
    }

    async fn wait_done(&mut self) {
        while self.next().await != Ev::Done {}
    }

    /// Drops the TCP connection without DISCONNECT (an abnormal close).
    fn drop_connection(self) {
        self.task.abort();
    }
}

mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

    pub fn qos(q: u8) -> QoS {
        match q {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    pub async fn connect(port: u16, id: &str, will: Option<LastWill>) -> Conn<AsyncClient> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected_tx.take() {
                            let _ = c.send(());
                        }
                        continue;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => Ev::SubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                    },
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Incoming(Packet::PubComp(_))) => Ev::Done,
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        timeout(WAIT, connected)
            .await
            .expect("no CONNACK within the bound")
            .expect("connection failed");
        Conn {
            client,
            events,
            task,
        }
    }

    pub fn will(topic: &str, payload: &[u8], q: u8, retain: bool) -> LastWill {
        LastWill::new(topic, payload.to_vec(), qos(q), retain)
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub fn qos(q: u8) -> QoS {
        match q {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    pub async fn connect(port: u16, id: &str, will: Option<LastWill>) -> Conn<AsyncClient> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some(w) = will {
            opts.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected_tx.take() {
                            let _ = c.send(());
                        }
                        continue;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => Ev::SubAck,
                    Ok(Event::Incoming(Packet::Publish(p))) => Ev::Publish {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                    },
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Incoming(Packet::PubComp(_))) => Ev::Done,
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        timeout(WAIT, connected)
            .await
            .expect("no CONNACK within the bound")
            .expect("connection failed");
        Conn {
            client,
            events,
            task,
        }
    }

    pub fn will(topic: &str, payload: &[u8], q: u8, retain: bool) -> LastWill {
        LastWill::new(topic, payload.to_vec(), qos(q), retain, None)
    }
}

fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool) -> Ev {
    Ev::Publish {
        topic: topic.to_string(),
        payload: payload.to_vec(),
        qos,
        retain,
    }
}

#[tokio::test]
async fn v4_round_trip_qos_0_1_2() {
    let b = Broker::start();
    let mut sub = v4::connect(b.port, "v4-sub", None).await;
    sub.client
        .subscribe("rt/#", v4::qos(2))
        .await
        .expect("subscribe");
    sub.wait_suback().await;
    let mut publ = v4::connect(b.port, "v4-pub", None).await;
    for q in 0..=2u8 {
        let topic = format!("rt/{q}");
        publ.client
            .publish(&topic, v4::qos(q), false, vec![q; 100])
            .await
            .expect("publish");
        assert_eq!(
            sub.next_publish().await,
            publish(&topic, &[q; 100], q, false)
        );
    }
    publ.wait_done().await;
}

#[tokio::test]
async fn v5_round_trip_qos_0_1_2() {
    let b = Broker::start();
    let mut sub = v5::connect(b.port, "v5-sub", None).await;
    sub.client
        .subscribe("rt/#", v5::qos(2))
        .await
        .expect("subscribe");
    sub.wait_suback().await;
    let mut publ = v5::connect(b.port, "v5-pub", None).await;
    for q in 0..=2u8 {
        let topic = format!("rt/{q}");
        publ.client
            .publish(&topic, v5::qos(q), false, vec![q; 100])
            .await
            .expect("publish");
        assert_eq!(
            sub.next_publish().await,
            publish(&topic, &[q; 100], q, false)
        );
    }
    publ.wait_done().await;
}

#[tokio::test]
async fn v4_to_v5_qos_downgrade() {
    let b = Broker::start();
    let mut sub = v5::connect(b.port, "dg-sub", None).await;
    sub.client
        .subscribe("dg/t", v5::qos(1))
        .await
        .expect("subscribe");
    sub.wait_suback().await;
    let publ = v4::connect(b.port, "dg-pub", None).await;
    publ.client
        .publish("dg/t", v4::qos(2), false, b"x".to_vec())
        .await
        .expect("publish");
    assert_eq!(sub.next_publish().await, publish("dg/t", b"x", 1, false));
}

#[tokio::test]
async fn retained_delivered_to_new_subscribers() {
    let b = Broker::start();
    let mut publ = v4::connect(b.port, "ret-pub", None).await;
    publ.client
        .publish("ret/t", v4::qos(1), true, b"kept".to_vec())
        .await
        .expect("publish");
    publ.wait_done().await;

    let mut s4 = v4::connect(b.port, "ret-sub4", None).await;
    s4.client
        .subscribe("ret/#", v4::qos(1))
        .await
        .expect("subscribe");
    assert_eq!(s4.next_publish().await, publish("ret/t", b"kept", 1, true));

    let mut s5 = v5::connect(b.port, "ret-sub5", None).await;
    s5.client
        .subscribe("ret/#", v5::qos(0))
        .await
        .expect("subscribe");
    assert_eq!(s5.next_publish().await, publish("ret/t", b"kept", 0, true));

    // An empty retained payload deletes it: a later subscriber gets nothing, which the
    // marker message published afterwards proves without waiting for a timeout.
    publ.client
        .publish("ret/t", v4::qos(1), true, Vec::new())
        .await
        .expect("delete");
    publ.wait_done().await;
    let mut late = v4::connect(b.port, "ret-late", None).await;
    late.client
        .subscribe("ret/#", v4::qos(1))
        .await
        .expect("subscribe");
    late.wait_suback().await;
    publ.client
        .publish("ret/marker", v4::qos(1), false, b"m".to_vec())
        .await
        .expect("marker");
    assert_eq!(
        late.next_publish().await,
        publish("ret/marker", b"m", 1, false)
    );
}

#[tokio::test]
async fn v4_will_on_abnormal_close_not_on_disconnect() {
    let b = Broker::start();
    let mut watcher = v4::connect(b.port, "will-watch", None).await;
    watcher
        .client
        .subscribe("will/#", v4::qos(1))
        .await
        .expect("subscribe");
    watcher.wait_suback().await;

    // A normal DISCONNECT suppresses the will.
    let polite = v4::connect(
        b.port,
        "will-polite",
        Some(v4::will("will/polite", b"no", 1, false)),
    )
    .await;
    polite.client.disconnect().await.expect("disconnect");

    // Dropping the connection publishes it.
    let rude = v4::connect(
        b.port,
        "will-rude",
        Some(v4::will("will/rude", b"gone", 1, false)),
    )
    .await;
    rude.drop_connection();
    assert_eq!(
        watcher.next_publish().await,
        publish("will/rude", b"gone", 1, false)
    );
}

#[tokio::test]
async fn v5_will_on_abnormal_close() {
    let b = Broker::start();
    let mut watcher = v5::connect(b.port, "will5-watch", None).await;
    watcher
        .client
        .subscribe("will5/#", v5::qos(2))
        .await
        .expect("subscribe");
    watcher.wait_suback().await;
    let rude = v5::connect(
        b.port,
        "will5-rude",
        Some(v5::will("will5/rude", b"gone", 2, false)),
    )
    .await;
    rude.drop_connection();
    assert_eq!(
        watcher.next_publish().await,
        publish("will5/rude", b"gone", 2, false)
    );
}
