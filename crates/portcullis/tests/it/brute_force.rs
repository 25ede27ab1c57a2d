//! Brute force through the running binary: 1,000 guesses from one address and 1,000 spread over
//! 50 addresses (through a trusted proxy's `X-Forwarded-For`) both succeed 0 times, while the
//! account's owner still logs in; in process and on Redis.

use std::net::SocketAddr;

use crate::support::{Gateway, Reply, Upstream, redis_state, send_json};

const PASSWORD: &str = "velvet tractor orbits quietly";
const ORIGIN: &str = "Origin: http://app.test";

/// The login throttle alone: the intrusion detection would ban the attacking addresses after
/// five failures (tested in `ids.rs`), and the per-client limit would refuse the flood, hiding
/// what the throttle does on its own.
fn config(upstream: &Upstream, state: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [ids]\nenabled = false\n[rate_limit]\nclient = \"off\"\n\
         [identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
         {state}\n\
         [[route]]\npath = \"/\"\nupstream = \"{}\"\n",
        upstream.url()
    )
}

fn login_from(
    addr: SocketAddr,
    ip: &str,
    email: &str,
    password: &str,
    device: Option<&str>,
) -> Reply {
    let body = format!(r#"{{"email":"{email}","password":"{password}"}}"#);
    let forwarded = format!("X-Forwarded-For: {ip}");
    let mut headers = vec![ORIGIN, forwarded.as_str()];
    let cookie = device.map(|d| format!("Cookie: __Host-portcullis_device={d}"));
    if let Some(cookie) = &cookie {
        headers.push(cookie);
    }
    send_json(addr, "POST", "/auth/api/login", &body, &headers)
}

/// Solves the challenge of a `proof_required` answer and logs in with it, from the address it
/// was issued to; the same proof cannot be used again, nor from another network.
fn proof_of_work_login(gateway: &Gateway, refused: &Reply) {
    let body: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON");
    let work = &body["error"]["proof_of_work"];
    let challenge = work["challenge"].as_str().expect("a challenge");
    let bits = u32::try_from(work["difficulty"].as_u64().expect("bits")).expect("bits");
    assert!(bits >= 20, "{bits}");
    let nonce = crate::support::solve_proof_of_work(challenge, bits);
    let login = |ip: &str| {
        let body = format!(
            r#"{{"email":"victim@example.com","password":"{PASSWORD}","proof":{{"challenge":"{challenge}","nonce":"{nonce}"}}}}"#
        );
        let forwarded = format!("X-Forwarded-For: {ip}");
        send_json(
            gateway.addr,
            "POST",
            "/auth/api/login",
            &body,
            &[ORIGIN, &forwarded],
        )
    };
    let elsewhere = login("192.0.2.7");
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.body);
    assert!(
        elsewhere.body.contains("challenge_failed"),
        "{}",
        elsewhere.body
    );
    let proven = login("198.51.100.7");
    assert_eq!(proven.status, 200, "{}", proven.body);
    let replayed = login("198.51.100.7");
    assert_eq!(replayed.status, 403, "{}", replayed.body);
    assert!(
        replayed.body.contains("challenge_failed"),
        "{}",
        replayed.body
    );
}

fn device_cookie(reply: &Reply) -> String {
    reply
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, value)| value.strip_prefix("__Host-portcullis_device="))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no device cookie: {reply:?}"))
        .to_owned()
}

/// The victim registers and logs in once from home (which gives the browser its device cookie).
fn victim(gateway: &Gateway) -> String {
    let body = format!(r#"{{"email":"victim@example.com","password":"{PASSWORD}"}}"#);
    let reply = send_json(gateway.addr, "POST", "/auth/api/register", &body, &[ORIGIN]);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let reply = login_from(
        gateway.addr,
        "198.51.100.7",
        "victim@example.com",
        PASSWORD,
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    device_cookie(&reply)
}

/// Runs 1,000 guesses from `addresses`, the real password among them at guess 500, and
/// `owner` (the real user logging in) at guess 700, in the middle of the attack; returns how
/// many guesses succeeded and how many were refused unchecked.
fn guesses(addr: SocketAddr, addresses: &[String], owner: impl Fn()) -> (usize, usize) {
    let (mut successes, mut refused) = (0, 0);
    for guess in 0..1000 {
        if guess == 700 {
            owner();
        }
        let password = if guess == 500 {
            PASSWORD.to_owned()
        } else {
            format!("guess number {guess}")
        };
        let ip = &addresses[guess % addresses.len()];
        let reply = login_from(addr, ip, "victim@example.com", &password, None);
        match reply.status {
            200 => successes += 1,
            429 | 403 => refused += 1,
            401 => {}
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    (successes, refused)
}

fn one_address(gateway: &Gateway) {
    let device = victim(gateway);
    // The owner, from home, with or without the device cookie, is not affected.
    let owner = || {
        for device in [None, Some(device.as_str())] {
            let home = login_from(
                gateway.addr,
                "198.51.100.7",
                "victim@example.com",
                PASSWORD,
                device,
            );
            assert_eq!(home.status, 200, "{}", home.body);
        }
    };
    let (successes, refused) = guesses(gateway.addr, &["203.0.113.9".to_owned()], owner);
    assert_eq!(successes, 0);
    assert!(
        refused >= 990,
        "only the first few guesses are checked: {refused} refused"
    );
    // The wait doubles: it is long by now, and says so.
    let reply = login_from(
        gateway.addr,
        "203.0.113.9",
        "victim@example.com",
        PASSWORD,
        None,
    );
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(
        reply
            .header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
    );
}

fn fifty_addresses(gateway: &Gateway) {
    let device = victim(gateway);
    let addresses: Vec<String> = (1..=50).map(|n| format!("203.0.113.{n}")).collect();
    // The owner's known browser logs in during the attack.
    let owner = || {
        let home = login_from(
            gateway.addr,
            "198.51.100.7",
            "victim@example.com",
            PASSWORD,
            Some(&device),
        );
        assert_eq!(home.status, 200, "{}", home.body);
    };
    let (successes, refused) = guesses(gateway.addr, &addresses, owner);
    assert_eq!(successes, 0);
    assert!(refused >= 900, "{refused} refused");
    // A fresh browser must prove control of the mailbox; the account is never locked for
    // its owner's known browser.
    let fresh = login_from(
        gateway.addr,
        "198.51.100.7",
        "victim@example.com",
        PASSWORD,
        None,
    );
    assert_eq!(fresh.status, 403, "{}", fresh.body);
    assert!(fresh.body.contains("proof_required"), "{}", fresh.body);
    // Or do the proof-of-work the answer carries: each such login costs its work.
    proof_of_work_login(gateway, &fresh);
    let known = login_from(
        gateway.addr,
        "198.51.100.7",
        "victim@example.com",
        PASSWORD,
        Some(&device),
    );
    assert_eq!(known.status, 200, "{}", known.body);
    // A device cookie of another account, or a forged one, is no way around it.
    let forged = format!("{}x", &device[..device.len() - 1]);
    let reply = login_from(
        gateway.addr,
        "198.51.100.7",
        "victim@example.com",
        PASSWORD,
        Some(&forged),
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[test]
fn a_thousand_guesses_from_one_address_in_process() {
    let upstream = Upstream::start("app");
    one_address(&Gateway::start(&config(&upstream, ""), &[]));
}

#[test]
fn a_thousand_guesses_from_fifty_addresses_in_process() {
    let upstream = Upstream::start("app");
    fifty_addresses(&Gateway::start(&config(&upstream, ""), &[]));
}

#[test]
fn a_thousand_guesses_from_one_address_on_redis() {
    let Some(state) = redis_state("one") else {
        return;
    };
    let upstream = Upstream::start("app");
    one_address(&Gateway::start(&config(&upstream, &state), &[]));
}

#[test]
fn a_thousand_guesses_from_fifty_addresses_on_redis() {
    let Some(state) = redis_state("fifty") else {
        return;
    };
    let upstream = Upstream::start("app");
    fifty_addresses(&Gateway::start(&config(&upstream, &state), &[]));
}

/// Two instances on one Redis share the counters: guesses split between them are counted
/// together, and parallel guesses cannot slip past the threshold.
#[test]
fn two_instances_share_the_counters_on_redis() {
    let Some(state) = redis_state("shared") else {
        return;
    };
    let upstream = Upstream::start("app");
    let config = config(&upstream, &state);
    let first = Gateway::start(&config, &[]);
    // The second instance shares the first one's store.
    let data = first.dir.0.join("data");
    let url = crate::support::sqlite_url(&data);
    let second = Gateway::start(&config, &[("PORTCULLIS_STORAGE__URL", &url)]);
    victim(&first);
    let checked: usize = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|n| {
                let addr = if n % 2 == 0 { first.addr } else { second.addr };
                scope.spawn(move || {
                    (0..5)
                        .filter(|k| {
                            let reply = login_from(
                                addr,
                                "203.0.113.77",
                                "victim@example.com",
                                &format!("wrong {n} {k}"),
                                None,
                            );
                            reply.status == 401
                        })
                        .count()
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap_or(0)).sum()
    });
    // Five free attempts and the one that starts the first wait: six passwords checked in all.
    assert_eq!(checked, 6, "40 parallel guesses over two instances");
}

/// `/readyz` reports the shared state: ready while its Redis answers, 503 once it is gone (and
/// logins then fail closed with 503 rather than skipping the brute-force defence).
#[test]
fn readiness_and_logins_follow_the_shared_state() {
    let Some(server) = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but redis-server is missing"
        );
        eprintln!("SKIPPED readiness_and_logins_follow_the_shared_state: no redis-server");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut redis = std::process::Command::new(server)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let upstream = Upstream::start("app");
    let state = format!("[state]\nurl = \"redis://127.0.0.1:{port}\"\n");
    let gateway = Gateway::start(&config(&upstream, &state), &[]);
    let ready = crate::support::get(gateway.admin, "/readyz", &[]);
    assert_eq!(ready.status, 200, "{}", ready.body);
    victim(&gateway);

    let _ = redis.kill();
    let _ = redis.wait();
    let ready = crate::support::get(gateway.admin, "/readyz", &[]);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("shared state unreachable"),
        "{}",
        ready.body
    );
    let login = login_from(
        gateway.addr,
        "198.51.100.7",
        "victim@example.com",
        PASSWORD,
        None,
    );
    assert_eq!(login.status, 503, "fail closed: {}", login.body);
}
