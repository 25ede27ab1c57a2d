//! `config check`, `config show` and configuration errors, through the binary.

use crate::support::{TempDir, run};

const EXAMPLE: &str = include_str!("../../../../examples/production.toml");

/// Runs `config check` on `text` with PostgreSQL configured from the environment and, when
/// `with_key` is set, a 32-byte key file provided through the environment too.
fn check(text: &str, with_key: bool) -> (bool, String) {
    let dir = TempDir::new("cfg");
    let file = dir.write("p.toml", text);
    let key = dir.write("key", "0123456789abcdef0123456789abcdef");
    let mut env = vec![(
        "PORTCULLIS_STORAGE__URL",
        "postgres://portcullis@db.internal/portcullis",
    )];
    if with_key {
        env.push((
            "PORTCULLIS_SERVER__SECRET_KEY_FILE",
            key.to_str().expect("utf8"),
        ));
    }
    let (status, output) = run(
        &["config", "check", "-c", file.to_str().expect("utf8")],
        &env,
    );
    (status.success(), output)
}

#[test]
fn the_production_example_passes() {
    let (ok, output) = check(EXAMPLE, true);
    assert!(ok, "{output}");
}

#[test]
fn each_unsafe_production_setting_fails_with_its_own_line() {
    let cases: [(&str, &str, &str); 12] = [
        (
            "url = \"smtp://mail.internal:587?tls=required\"\n",
            "",
            "mail.url is unset",
        ),
        (
            "public_url = \"https://app.example.com\"",
            "public_url = \"http://app.example.com\"",
            "travel in clear",
        ),
        (
            "[identity]\n",
            "[identity]\nhash_memory_kib = 4096\n",
            "below OWASP",
        ),
        (
            "[server]\n",
            "[server]\nsecret_key = \"0123456789abcdef0123456789abcdef\"\n",
            "inline",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\"]",
            "trusted_proxies = []",
            "plain HTTP",
        ),
        (
            "cors = { origins = [\"https://app.example.com\"], credentials = true }",
            "cors = { origins = [\"*\"], credentials = true }",
            "origin * with credentials",
        ),
        ("mode = \"block\"", "mode = \"off\"", "waf.mode is off"),
        (
            "name = \"web\"\n",
            "name = \"web\"\nwaf = \"off\"\n",
            "route \"web\": waf is off",
        ),
        (
            "paranoia = 1\n",
            "paranoia = 1\nrule_header = true\n",
            "waf.rule_header is true",
        ),
        (
            "[server]\n",
            "[server]\nhide_docs = false\n",
            "docs are exposed",
        ),
        (
            "[storage]\n",
            "[storage]\nurl = \"postgres://portcullis:hunter2@db/portcullis\"\n",
            "password inline",
        ),
        (
            "[server]\n",
            "[server]\nsecret_key_file = \"/nonexistent\"\n",
            "secret_key_file",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(EXAMPLE.contains(from), "example lacks {from:?}");
        let text = EXAMPLE.replacen(from, to, 1);
        // The key cases must not get the test's own key from the environment.
        let with_key = expected != "inline" && expected != "secret_key_file";
        let (ok, output) = check(&text, with_key);
        assert!(!ok, "{expected}: passed\n{text}");
        assert!(output.contains(expected), "{expected}: {output}");
    }
}

#[test]
fn a_short_key_and_sqlite_without_override_fail() {
    let dir = TempDir::new("cfg");
    let file = dir.write("p.toml", EXAMPLE);
    let key = dir.write("key", "short");
    let (status, output) = run(
        &["config", "check", "-c", file.to_str().expect("utf8")],
        &[(
            "PORTCULLIS_SERVER__SECRET_KEY_FILE",
            key.to_str().expect("utf8"),
        )],
    );
    assert!(!status.success());
    assert!(output.contains("at least 32"), "{output}");
    assert!(output.contains("storage is SQLite"), "{output}");
}

#[test]
fn waf_settings_are_validated() {
    for (waf, expected) in [
        ("paranoia = 5", "waf.paranoia must be 1 to 4"),
        (
            "paranoia = 2\ndetection_paranoia = 1",
            "waf.detection_paranoia",
        ),
        (
            "exclusions = [{ rules = [999999] }]",
            "no WAF rule has id 999999",
        ),
        (
            "exclusions = [{ location = \"body2\" }]",
            "location \"body2\"",
        ),
        ("over_limit = \"drop\"", "over_limit"),
    ] {
        let dir = TempDir::new("cfg");
        let file = dir.write("p.toml", &format!("[waf]\n{waf}\n"));
        let (status, output) = run(
            &["config", "check", "-c", file.to_str().expect("utf8")],
            &[],
        );
        assert!(!status.success(), "{waf}: accepted");
        assert!(output.contains(expected), "{waf}: {output}");
    }
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_line() {
    let dir = TempDir::new("cfg");
    let file = dir.write(
        "p.toml",
        "profile = \"staging\"\n\n[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n",
    );
    let (status, output) = run(
        &["config", "check", "-c", file.to_str().expect("utf8")],
        &[],
    );
    assert!(!status.success());
    assert!(
        output.contains("lisen") && output.contains("line 5"),
        "{output}"
    );
    let (status, output) = run(&["config", "check"], &[("PORTCULLIS_SERVER__LISTNE", "1")]);
    assert!(!status.success());
    assert!(output.contains("PORTCULLIS_SERVER__LISTNE"), "{output}");
}

#[test]
fn show_applies_presets_and_overrides_and_redacts_secrets() {
    let (status, output) = run(
        &["config", "show", "--profile", "production"],
        &[
            (
                "PORTCULLIS_SERVER__SECRET_KEY",
                "super-secret-value-that-is-long-enough",
            ),
            ("PORTCULLIS_STORAGE__URL", "postgres://app:hunter2@db/app"),
            ("PORTCULLIS_LIMITS__MAX_BODY_BYTES", "1234"),
        ],
    );
    assert!(status.success(), "{output}");
    assert!(output.contains("profile = \"production\""), "{output}");
    assert!(
        output.contains("hsts = true") && output.contains("hide_docs = true"),
        "{output}"
    );
    assert!(output.contains("error_detail = \"generic\""), "{output}");
    assert!(output.contains("max_body_bytes = 1234"), "{output}");
    assert!(
        !output.contains("super-secret") && !output.contains("hunter2"),
        "{output}"
    );
    let (_, dev) = run(&["config", "show"], &[]);
    assert!(
        dev.contains("error_detail = \"detailed\"") && dev.contains("mode = \"detect\""),
        "{dev}"
    );
}
