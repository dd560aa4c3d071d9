//! Golden tests: the JSON, SARIF and text outputs of one fixed scenario (a bad host, a
//! config with a few problems) are byte for byte what tests/golden/ holds. The formats are
//! a contract with CI pipelines and scanners (docs/doctor.md): a change here must be
//! deliberate. Regenerate with `UPDATE_GOLDEN=1 cargo test -p rampart-doctor --test golden`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use rampart_doctor::render::{self, Format};
use rampart_doctor::Role;

fn scenario(dir: &Path) -> rampart_doctor::Report {
    let d = dir.display();
    Pki::new((2030, 1, 1)).write(dir, (2025, 11, 1), (2025, 12, 1));
    chmod(&dir.join("server.key"), 0o644);
    std::fs::create_dir(dir.join("data")).unwrap();
    chmod(&dir.join("data"), 0o700);
    let toml = format!(
        r#"[node]
data_dir = "{d}/data"

[[listeners]]
name = "mqtts"
kind = "tls"
bind = "0.0.0.0:8883"

[listeners.tls]
cert_file = "{d}/server.pem"
key_file = "{d}/server.key"
ca_file = "{d}/clients-ca.pem"
client_auth = "required"
crl_files = ["{d}/clients-ca.crl"]

[[listeners]]
name = "local"
kind = "tcp"
bind = "127.0.0.1:1883"

[mqtt]
max_topic_levels = 40

[danger]
allow_anonymous = true
"#
    );
    let cfg = config_file(dir, &toml, 0o600);
    rampart_doctor::run(&cfg, &opts("host-bad", Role::Audit))
}

/// Replaces what differs between machines: the temp dir, the owner of the files, the version.
fn normalise(text: &str, dir: &Path) -> String {
    let uid = std::fs::metadata(dir).unwrap().uid();
    let owner = if uid == 0 {
        "root".to_string()
    } else {
        uid.to_string()
    };
    text.replace(&dir.display().to_string(), "$TMP")
        .replace(&format!("owner {owner}"), "owner $OWNER")
        .replace(&format!("\"{}\"", render::TOOL_VERSION), "\"$VERSION\"")
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{name} differs from tests/golden/{name} (first differing line: {line:?}); if the change is deliberate, regenerate with UPDATE_GOLDEN=1 and update docs/doctor.md\n--- actual ---\n{actual}"
        );
    }
}

#[test]
fn json_golden() {
    let dir = tempfile::tempdir().unwrap();
    let report = scenario(dir.path());
    let out = normalise(&render::render(&report, Format::Json), dir.path());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "rampart-doctor");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["summary"]["result"], "fail");
    check_golden("report.json", &out);
}

#[test]
fn sarif_golden() {
    let dir = tempfile::tempdir().unwrap();
    let report = scenario(dir.path());
    let out = normalise(&render::render(&report, Format::Sarif), dir.path());
    // Structural rules of SARIF 2.1.0 that consumers rely on.
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for r in run["results"].as_array().unwrap() {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
        let (kind, level) = (r["kind"].as_str().unwrap(), r["level"].as_str().unwrap());
        assert!(
            matches!(
                (kind, level),
                ("fail", "error")
                    | ("fail", "warning")
                    | ("pass", "none")
                    | ("notApplicable", "none")
            ),
            "{kind} {level}"
        );
        for loc in r["locations"].as_array().into_iter().flatten() {
            let uri = loc["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap();
            assert!(
                uri.starts_with("file:///") || !uri.starts_with('/'),
                "{uri}"
            );
        }
    }
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(ids.len(), dedup.len(), "rule ids are unique");
    check_golden("report.sarif", &out);
}

#[test]
fn text_golden() {
    let dir = tempfile::tempdir().unwrap();
    let report = scenario(dir.path());
    let out = normalise(&render::render(&report, Format::Text), dir.path());
    assert!(out.contains("\nScore per phase (pass / applicable)\n"));
    assert!(out.contains("\nResult: FAIL ("), "{out}");
    check_golden("report.txt", &out);
}
