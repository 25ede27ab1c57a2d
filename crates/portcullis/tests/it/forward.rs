//! Forward-auth (`/auth/forward`), the login page and the browser redirect to it, through the
//! running binary.

use std::net::SocketAddr;

use crate::support::{Gateway, Reply, Upstream, get, raw, send_json};

const PASSWORD: &str = "velvet tractor orbits quietly";
const ORIGIN: &str = "Origin: http://app.test";
const HTML: &str = "Accept: text/html,application/xhtml+xml";

fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start("app");
    let config = format!(
        "[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
         [[route]]\npath = \"/\"\nupstream = \"{url}\"\n\
         [[route]]\npath = \"/app\"\nupstream = \"{url}\"\nauth = \"session\"\n",
        url = upstream.url()
    );
    let gateway = Gateway::start(&config, &[]);
    let body = format!(r#"{{"email":"uma@example.com","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send_json(gateway.addr, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
        202
    );
    (upstream, gateway)
}

fn session(addr: SocketAddr) -> String {
    let body = format!(r#"{{"email":"uma@example.com","password":"{PASSWORD}"}}"#);
    let reply = send_json(addr, "POST", "/auth/api/login", &body, &[ORIGIN]);
    let cookie = reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session");
    format!("Cookie: {cookie}")
}

fn forward(addr: SocketAddr, query: &str, headers: &[&str]) -> Reply {
    let mut all = vec![
        "X-Forwarded-Method: GET",
        "X-Forwarded-Host: app.test",
        "X-Forwarded-Uri: /dash?a=1",
    ];
    all.extend_from_slice(headers);
    get(addr, &format!("/auth/forward{query}"), &all)
}

#[test]
fn forward_auth_answers_for_nginx_traefik_and_caddy() {
    let (_upstream, gateway) = start();
    let addr = gateway.addr;
    // No credentials: 401 for an API client, a redirect to the login page for a browser.
    assert_eq!(forward(addr, "", &[]).status, 401);
    let browser = forward(addr, "", &[HTML]);
    assert_eq!(browser.status, 302, "{}", browser.body);
    assert_eq!(
        browser.header("location"),
        Some("/auth/login?next=%2Fdash%3Fa%3D1")
    );

    let cookie = session(addr);
    let ok = forward(addr, "", &[&cookie]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-portcullis-email"), Some("uma@example.com"));
    assert_eq!(ok.header("x-portcullis-auth"), Some("session"));
    assert!(
        ok.header("x-portcullis-identity")
            .is_some_and(|t| t.split('.').count() == 3)
    );
    // A location that needs a role the caller lacks.
    assert_eq!(forward(addr, "?roles=admin", &[&cookie]).status, 403);
    // The original request's method and origin decide CSRF.
    let cross = get(
        addr,
        "/auth/forward",
        &[
            "X-Forwarded-Method: POST",
            "X-Forwarded-Host: app.test",
            "Origin: https://evil.example",
            &cookie,
        ],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let cross_fetch = get(
        addr,
        "/auth/forward",
        &[
            "X-Forwarded-Method: DELETE",
            "X-Forwarded-Host: app.test",
            "Sec-Fetch-Site: cross-site",
            &cookie,
        ],
    );
    assert_eq!(cross_fetch.status, 403, "{}", cross_fetch.body);
}

#[test]
fn browsers_are_sent_to_log_in_and_brought_back() {
    let (_upstream, gateway) = start();
    let addr = gateway.addr;
    let reply = get(addr, "/app/reports?q=1", &[HTML]);
    assert_eq!(reply.status, 302, "{}", reply.body);
    assert_eq!(
        reply.header("location"),
        Some("/auth/login?next=%2Fapp%2Freports%3Fq%3D1")
    );
    // API clients get 401.
    assert_eq!(get(addr, "/app/reports", &[]).status, 401);

    // The page: no script under the strict CSP, a synchronizer token, `next` kept local.
    let page = get(addr, "/auth/login?next=%2F%2Fevil.example", &[HTML]);
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'"))
    );
    assert!(
        page.body.contains("name=\"next\" value=\"/\""),
        "{}",
        page.body
    );
    let csrf_cookie = page
        .headers
        .iter()
        .find_map(|(n, v)| {
            (n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-portcullis_csrf="))
                .then_some(v)
        })
        .and_then(|v| v.split(';').next())
        .expect("csrf cookie")
        .to_owned();
    let token = csrf_cookie
        .trim_start_matches("__Host-portcullis_csrf=")
        .to_owned();
    assert!(
        page.body
            .contains(&format!("name=\"csrf\" value=\"{token}\""))
    );

    let post = |form: &str, cookie: &str| {
        let head = format!(
            "POST /auth/login HTTP/1.1\r\nHost: app.test\r\n{ORIGIN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nCookie: {cookie}",
            form.len()
        );
        raw(addr, &head, form.as_bytes())
    };
    let password: String = form_encode(PASSWORD);
    let form = |token: &str, password: &str, next: &str| {
        format!("csrf={token}&next={next}&email=uma%40example.com&password={password}")
    };
    // Without the token (a cross-site form cannot read it): refused.
    let forged = post(&form("", &password, "%2Fapp%2Freports"), "theme=dark");
    assert_eq!(forged.status, 403, "{}", forged.body);
    // Wrong password: the page again, with the error.
    let wrong = post(&form(&token, "nope", "%2Fapp%2Freports"), &csrf_cookie);
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("Wrong e-mail address or password"),
        "{}",
        wrong.body
    );
    // Right password: back to where the browser was going, with a session.
    let ok = post(&form(&token, &password, "%2Fapp%2Freports"), &csrf_cookie);
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.header("location"), Some("/app/reports"));
    let session = ok
        .headers
        .iter()
        .find_map(|(n, v)| {
            (n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-portcullis_session="))
                .then_some(v)
        })
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    assert_eq!(
        get(addr, "/app/reports", &[&format!("Cookie: {session}")]).status,
        200
    );
    // An open redirect through `next` is refused: it falls back to `/`.
    let away = post(
        &form(&token, &password, "https%3A%2F%2Fevil.example%2F"),
        &csrf_cookie,
    );
    assert_eq!(away.header("location"), Some("/"));
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// nginx with `auth_request`, configured as `docs/forward-auth.md` shows (without TLS), in
/// front of the upstream and of Portcullis: a browser is sent to log in, a session reaches the
/// application with the identity headers, and a forged identity header does not.
#[test]
fn nginx_auth_request_as_documented() {
    let Some(Front {
        program: nginx,
        upstream,
        portcullis,
        port,
        dir,
    }) = Front::set_up("nginx", "nginx_auth_request_as_documented")
    else {
        return;
    };
    let conf = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         server {{\n  listen 127.0.0.1:{port};\n  server_name app.test;\n\
          location /auth/ {{\n   proxy_pass http://{pc};\n   proxy_set_header Host $host;\n   proxy_set_header X-Forwarded-For $remote_addr;\n   proxy_set_header X-Forwarded-Proto $scheme;\n  }}\n\
          location = /_portcullis {{\n   internal;\n   proxy_pass http://{pc}/auth/auth-request;\n   proxy_pass_request_body off;\n   proxy_set_header Content-Length \"\";\n\
           proxy_set_header Host $host;\n   proxy_set_header X-Forwarded-Method $request_method;\n   proxy_set_header X-Forwarded-Host $host;\n\
           proxy_set_header X-Forwarded-Uri $request_uri;\n   proxy_set_header X-Forwarded-For $remote_addr;\n   proxy_set_header X-Forwarded-Proto $scheme;\n  }}\n\
          location / {{\n   auth_request /_portcullis;\n   auth_request_set $portcullis_user $upstream_http_x_portcullis_user;\n\
           auth_request_set $portcullis_email $upstream_http_x_portcullis_email;\n   auth_request_set $portcullis_roles $upstream_http_x_portcullis_roles;\n\
           auth_request_set $portcullis_identity $upstream_http_x_portcullis_identity;\n   proxy_set_header X-Portcullis-User $portcullis_user;\n\
           proxy_set_header X-Portcullis-Email $portcullis_email;\n   proxy_set_header X-Portcullis-Roles $portcullis_roles;\n\
           proxy_set_header X-Portcullis-Identity $portcullis_identity;\n   error_page 401 = @login;\n   proxy_pass http://{up};\n  }}\n\
          location @login {{\n   return 302 /auth/login?next=$request_uri;\n  }}\n }}\n}}\n",
        d = dir.0.display(),
        pc = portcullis.addr,
        up = upstream.addr,
    );
    let conf_path = dir.write("nginx.conf", &conf);
    let child = std::process::Command::new(nginx)
        .arg("-c")
        .arg(&conf_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    // nginx makes the location absolute, on its own host.
    through_the_proxy(child, port, &format!(":{port}/auth/login?next=/dash"));
}

#[test]
fn caddy_forward_auth_as_documented() {
    let Some(Front {
        program: caddy,
        upstream,
        portcullis,
        port,
        dir,
    }) = Front::set_up("caddy", "caddy_forward_auth_as_documented")
    else {
        return;
    };
    // docs/forward-auth.md's Caddyfile, on a loopback port without TLS.
    let conf = format!(
        "{{\n admin off\n auto_https off\n}}\n\
         http://:{port} {{\n bind 127.0.0.1\n\
          handle /auth/* {{\n  reverse_proxy {pc}\n }}\n\
          handle {{\n  forward_auth {pc} {{\n   uri /auth/forward\n\
            copy_headers X-Portcullis-User X-Portcullis-Email X-Portcullis-Roles X-Portcullis-Identity\n  }}\n\
           reverse_proxy {up}\n }}\n}}\n",
        pc = portcullis.addr,
        up = upstream.addr,
    );
    let conf_path = dir.write("Caddyfile", &conf);
    let child = std::process::Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf_path)
        .env("XDG_DATA_HOME", &dir.0)
        .env("XDG_CONFIG_HOME", &dir.0)
        .env("HOME", &dir.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start caddy");
    // Caddy passes Portcullis's own relative location through.
    through_the_proxy(child, port, "/auth/login?next=%2Fdash");
}

/// Traefik's `ForwardAuth` middleware, configured as `docs/forward-auth.md` shows (a loopback
/// entry point, no TLS).
#[test]
fn traefik_forward_auth_as_documented() {
    let Some(Front {
        program: traefik,
        upstream,
        portcullis,
        port,
        dir,
    }) = Front::set_up("traefik", "traefik_forward_auth_as_documented")
    else {
        return;
    };
    // docs/forward-auth.md's dynamic configuration, for the test's host and ports.
    let dynamic = format!(
        "http:\n  middlewares:\n    portcullis:\n      forwardAuth:\n\
         \x20       address: \"http://{pc}/auth/forward\"\n\
         \x20       authResponseHeaders:\n\
         \x20         - X-Portcullis-User\n          - X-Portcullis-Email\n\
         \x20         - X-Portcullis-Roles\n          - X-Portcullis-Identity\n\
         \x20 routers:\n    app:\n      rule: \"Host(`app.test`)\"\n      middlewares: [\"portcullis\"]\n\
         \x20     service: app\n    portcullis:\n      rule: \"Host(`app.test`) && PathPrefix(`/auth/`)\"\n\
         \x20     service: portcullis\n\
         \x20 services:\n    app:\n      loadBalancer: {{ servers: [{{ url: \"http://{up}\" }}] }}\n\
         \x20   portcullis:\n      loadBalancer: {{ servers: [{{ url: \"http://{pc}\" }}] }}\n",
        pc = portcullis.addr,
        up = upstream.addr,
    );
    let dynamic_path = dir.write("dynamic.yml", &dynamic);
    let child = std::process::Command::new(traefik)
        .arg("--global.checkNewVersion=false")
        .arg("--global.sendAnonymousUsage=false")
        .arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
        .arg(format!(
            "--providers.file.filename={}",
            dynamic_path.display()
        ))
        .arg("--log.level=ERROR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start traefik");
    // Traefik passes Portcullis's own relative location through.
    through_the_proxy(child, port, "/auth/login?next=%2Fdash");
}

/// What a test of a proxy in front needs: the proxy's program, the app, Portcullis trusting
/// loopback proxies, a free port for the proxy and a scratch folder.
struct Front {
    program: std::path::PathBuf,
    upstream: Upstream,
    portcullis: Gateway,
    port: u16,
    dir: crate::support::TempDir,
}

impl Front {
    /// `None` (the test skips) when `program` is not installed, outside CI only.
    fn set_up(program: &str, test: &str) -> Option<Self> {
        let Some(path) = which(program) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {program} is missing (scripts/test-tools.sh installs it)"
            );
            eprintln!("SKIPPED {test}: {program} is not installed");
            return None;
        };
        let config = "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[identity]\nhash_memory_kib = 256\nhash_iterations = 1\n\
                      [[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:9\"\n";
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        Some(Self {
            program: path,
            upstream: Upstream::start("app"),
            portcullis: Gateway::start(config, &[]),
            port,
            dir: crate::support::TempDir::new(program),
        })
    }
}

/// Through a proxy on `port` in front of Portcullis and the app: registration and login reach
/// Portcullis; a browser without a session is sent to log in (`login_location` ends the
/// location); a session reaches the app with identity headers, and a forged role is replaced.
fn through_the_proxy(mut child: std::process::Child, port: u16, login_location: &str) {
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut up = false;
    // Up to 30 s: on a loaded 2-core machine (the whole suite running) the proxy's start has
    // taken longer than 5 s.
    for _ in 0..600 {
        if std::net::TcpStream::connect(front).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Traefik listens before its file provider has loaded the routes.
    for _ in 0..100 {
        if !up || get(front, "/auth/login", &[]).status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let check = || {
        assert!(up, "the proxy did not start");
        let body = format!(r#"{{"email":"vera@example.com","password":"{PASSWORD}"}}"#);
        assert_eq!(
            send_json(front, "POST", "/auth/api/register", &body, &[ORIGIN]).status,
            202
        );
        // A browser without a session is sent to the login page, to come back to /dash.
        let browser = get(front, "/dash", &[HTML]);
        assert_eq!(browser.status, 302, "{}", browser.body);
        let location = browser.header("location").unwrap_or_default();
        assert!(location.ends_with(login_location), "{location}");
        let login = send_json(front, "POST", "/auth/api/login", &body, &[ORIGIN]);
        assert_eq!(login.status, 200, "{}", login.body);
        let cookie = login
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(|c| format!("Cookie: {c}"))
            .expect("session");
        let reply = get(front, "/dash", &[&cookie, "X-Portcullis-Roles: admin"]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply.body.contains("email=vera@example.com "),
            "{}",
            reply.body
        );
        assert!(
            reply.body.contains("roles=user "),
            "the forged role is replaced: {}",
            reply.body
        );
        assert!(!reply.body.contains("identity=- "), "{}", reply.body);
        // A cross-site POST that claims to be a GET: the proxy, not the client, tells
        // Portcullis the method, so the CSRF check still sees the POST.
        let post = raw(
            front,
            &format!(
                "POST /dash HTTP/1.1\r\nHost: app.test\r\nOrigin: https://evil.example\r\n\
                 X-Forwarded-Method: GET\r\nContent-Length: 0\r\n{cookie}"
            ),
            b"",
        );
        assert_eq!(post.status, 403, "{}", post.body);
    };
    let outcome = std::panic::catch_unwind(check);
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.exists())
}
