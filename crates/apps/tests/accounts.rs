//! Accounts, sessions, the token endpoint, guests, invites, rate limits and hostile
//! requests.

use base64::Engine as _;
use serde_json::{Value, json};
use switchboard_apps::Signup;

use crate::util::{body, code, password, session_of, start, start_with};

/// The claims of a JWT, unverified (the test only reads them).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn sign_up_sign_in_tokens_and_sign_out() {
    let server = start(|_| {}).await;
    let me = server.me(None).await;
    assert_eq!(me, json!({"user": null, "signup": true, "guests": true}));

    let signup = server
        .post(
            "/auth/signup",
            json!({"name": "Alice", "password": password("Alice")}),
            None,
        )
        .await;
    assert_eq!(signup.status, 200, "{}", signup.text());
    let cookie = signup.header("set-cookie").expect("a cookie").to_owned();
    for part in ["sb_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert_eq!(
        body(&signup)["user"],
        json!({"id": "alice", "name": "Alice", "roles": [], "guest": false})
    );
    let first = session_of(&signup);
    assert_eq!(server.me(Some(&first)).await["user"]["name"], "Alice");

    // Names are unique case-insensitively.
    let taken = server
        .post(
            "/auth/signup",
            json!({"name": "ALICE", "password": "another-password"}),
            None,
        )
        .await;
    assert_eq!((taken.status, code(&taken).as_str()), (409, "name_taken"));
    for (name, pass, slug) in [
        ("a", "long-enough-password", "invalid_name"),
        ("<script>", "long-enough-password", "invalid_name"),
        ("dave", "short", "invalid_password"),
    ] {
        let bad = server
            .post(
                "/auth/signup",
                json!({"name": name, "password": pass}),
                None,
            )
            .await;
        assert_eq!((bad.status, code(&bad)), (400, slug.to_owned()), "{name}");
    }

    // Wrong password, unknown name: the same 401.
    for (name, pass) in [("alice", "wrong-password"), ("nobody", "wrong-password")] {
        let wrong = server
            .post(
                "/auth/signin",
                json!({"name": name, "password": pass}),
                None,
            )
            .await;
        assert_eq!(
            (wrong.status, code(&wrong).as_str()),
            (401, "bad_credentials")
        );
        assert!(wrong.header("set-cookie").is_none());
    }
    let signin = server
        .post(
            "/auth/signin",
            json!({"name": "aLiCe", "password": password("Alice")}),
            None,
        )
        .await;
    assert_eq!(signin.status, 200, "{}", signin.text());
    let second = session_of(&signin);
    assert_ne!(first, second, "a session per sign-in");

    // The token carries the name, the guest flag and the roles, and the hub takes it.
    let token = server.token(&second).await;
    let claims = claims(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["info"], json!({"name": "Alice", "guest": false}));
    assert!(claims.get("roles").is_none(), "no roles: {claims}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp > now + 500 && exp <= now + 601,
        "10 minutes: {exp} vs {now}"
    );
    let mut ws = server.connect(&second).await;
    ws.ok(json!({"cmd": "subscribe", "channel": "room:lobby"}))
        .await;
    let presence = ws
        .ok(json!({"cmd": "presence", "channel": "room:lobby"}))
        .await;
    assert_eq!(
        presence["presence"]["alice"]["info"],
        json!({"name": "Alice", "guest": false})
    );

    // Signing out ends that session only: its cookie gets no token any more.
    let out = server.post("/auth/signout", json!({}), Some(&second)).await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let refused = server.post("/auth/token", json!({}), Some(&second)).await;
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (401, "signed_out")
    );
    assert_eq!(server.me(Some(&second)).await["user"], Value::Null);
    assert_eq!(server.me(Some(&first)).await["user"]["id"], "alice");
    let nothing = server.post("/auth/token", json!({}), None).await;
    assert_eq!(nothing.status, 401);
}

#[tokio::test]
async fn sign_ins_are_rate_limited_per_address_and_per_account() {
    let server = start(|o| {
        o.limits.signin_per_ip_per_minute = 4;
        o.limits.signin_failures_per_account_per_hour = 2;
    })
    .await;
    server.signup("erin").await;
    let attempt = |name: &'static str, pass: String| {
        let server = &server;
        async move {
            server
                .post(
                    "/auth/signin",
                    json!({"name": name, "password": pass}),
                    None,
                )
                .await
        }
    };
    // Two failures lock the account, even for the right password.
    for _ in 0..2 {
        assert_eq!(attempt("erin", "wrong-password".into()).await.status, 401);
    }
    let locked = attempt("erin", password("erin")).await;
    assert_eq!(
        (locked.status, code(&locked).as_str()),
        (429, "rate_limited")
    );
    assert!(locked.header("retry-after").is_some());
    // The fourth attempt from this address was the last of its minute.
    assert_eq!(attempt("other", "wrong-password".into()).await.status, 401);
    let limited = attempt("other", "wrong-password".into()).await;
    assert_eq!(
        (limited.status, code(&limited).as_str()),
        (429, "rate_limited")
    );
    assert!(server.apps.metrics().rate_limited.get() >= 2);
}

#[tokio::test]
async fn hostile_requests_get_clear_refusals() {
    let server = start(|_| {}).await;
    let addr = server.addr.to_string();
    let json_type = ("Content-Type", "application/json");
    let body = r#"{"name":"mallory","password":"mallory-password"}"#.to_owned();

    // Another site's page.
    let cross = server
        .request(
            "POST",
            "/auth/signup",
            &[json_type, ("Origin", "http://evil.example")],
            body.clone(),
        )
        .await;
    assert_eq!((cross.status, code(&cross).as_str()), (403, "cross_origin"));
    let fetch_site = server
        .request(
            "POST",
            "/auth/signin",
            &[json_type, ("Sec-Fetch-Site", "cross-site")],
            body.clone(),
        )
        .await;
    assert_eq!(fetch_site.status, 403);
    // A form post (no JSON type).
    let form = server
        .request(
            "POST",
            "/auth/signup",
            &[
                ("Content-Type", "text/plain"),
                ("Origin", &format!("http://{addr}")),
            ],
            body.clone(),
        )
        .await;
    assert_eq!((form.status, code(&form).as_str()), (403, "json_required"));
    // Broken JSON, wrong shapes, a huge body.
    for broken in ["{", "[]", r#"{"name": 5}"#, "\u{0}"] {
        let bad = server
            .request("POST", "/auth/signin", &[json_type], broken.to_owned())
            .await;
        assert_eq!(
            (bad.status, code(&bad).as_str()),
            (400, "bad_json"),
            "{broken}"
        );
    }
    let huge = server
        .request(
            "POST",
            "/auth/signup",
            &[json_type],
            format!(r#"{{"name":"x","password":"{}"}}"#, "p".repeat(100_000)),
        )
        .await;
    assert_eq!((huge.status, code(&huge).as_str()), (413, "too_large"));
    assert!(server.apps.metrics().bad_requests.get() >= 7);
    assert_eq!(server.apps.store().account_count().unwrap(), 0);
}

#[tokio::test]
async fn guests_sign_in_with_a_name_unless_disabled() {
    let server = start(|_| {}).await;
    server.signup("Frank").await;
    let guest = server
        .post("/auth/guest", json!({"name": "Visitor"}), None)
        .await;
    assert_eq!(guest.status, 200, "{}", guest.text());
    let user = &body(&guest)["user"];
    assert_eq!(
        (user["name"].clone(), user["guest"].clone()),
        (json!("Visitor"), json!(true))
    );
    let id = user["id"].as_str().unwrap();
    assert!(id.starts_with("guest:") && id.len() == 18, "{id}");
    let cookie = session_of(&guest);
    let claims = claims(&server.token(&cookie).await);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["info"], json!({"name": "Visitor", "guest": true}));
    // A guest cannot take an account's name.
    let impostor = server
        .post("/auth/guest", json!({"name": "frank"}), None)
        .await;
    assert_eq!(
        (impostor.status, code(&impostor).as_str()),
        (409, "name_taken")
    );

    let closed = start(|o| o.guests = false).await;
    assert_eq!(closed.me(None).await["guests"], false);
    let refused = closed
        .post("/auth/guest", json!({"name": "Visitor"}), None)
        .await;
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (403, "guests_disabled")
    );
}

#[tokio::test]
async fn invite_only_sign_up_and_the_first_admin() {
    let server = start(|o| o.signup = Signup::Invite).await;
    assert_eq!(server.me(None).await["signup"], false);
    let closed = server
        .post(
            "/auth/signup",
            json!({"name": "gina", "password": password("gina")}),
            None,
        )
        .await;
    assert_eq!(
        (closed.status, code(&closed).as_str()),
        (403, "signup_closed")
    );
    let code_ = server
        .apps
        .first_admin_invite()
        .expect("no account yet: a first admin's invite")
        .to_owned();
    assert_eq!(
        switchboard_apps::invite_path(&code_),
        format!("/signin?invite={code_}")
    );
    let bogus = server
        .post(
            "/auth/signup",
            json!({"name": "gina", "password": password("gina"), "invite": "nope"}),
            None,
        )
        .await;
    assert_eq!(
        (bogus.status, code(&bogus).as_str()),
        (403, "invalid_invite")
    );
    let admin = server
        .post(
            "/auth/signup",
            json!({"name": "gina", "password": password("gina"), "invite": code_}),
            None,
        )
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text());
    assert_eq!(body(&admin)["user"]["roles"], json!(["admin"]));
    let cookie = session_of(&admin);
    assert_eq!(
        claims(&server.token(&cookie).await)["roles"],
        json!(["admin"])
    );
    let again = server
        .post(
            "/auth/signup",
            json!({"name": "hank", "password": password("hank"), "invite": code_}),
            None,
        )
        .await;
    assert_eq!(
        (again.status, code(&again).as_str()),
        (403, "invalid_invite"),
        "used"
    );
    // An invite from the CLI makes a member.
    let store = server.apps.store().as_ref();
    let member =
        switchboard_apps::admin::create_invite(store, false, std::time::Duration::from_secs(60))
            .unwrap();
    let hank = server
        .post(
            "/auth/signup",
            json!({"name": "hank", "password": password("hank"), "invite": member}),
            None,
        )
        .await;
    assert_eq!(hank.status, 200, "{}", hank.text());
    assert_eq!(body(&hank)["user"]["roles"], json!([]));
}

#[tokio::test]
async fn an_admin_made_by_the_cli_signs_in_with_the_role() {
    let server = start(|_| {}).await;
    let store = server.apps.store().as_ref();
    use switchboard_apps::admin;
    admin::add_user(store, "Root", "root-password-1", true).unwrap();
    assert!(
        admin::add_user(store, "root", "another-password", false).is_err(),
        "taken"
    );
    assert!(
        admin::add_user(store, "x", "another-password", false).is_err(),
        "bad name"
    );
    let signin = server
        .post(
            "/auth/signin",
            json!({"name": "root", "password": "root-password-1"}),
            None,
        )
        .await;
    assert_eq!(signin.status, 200, "{}", signin.text());
    let cookie = session_of(&signin);
    assert_eq!(body(&signin)["user"]["roles"], json!(["admin"]));
    assert_eq!(
        claims(&server.token(&cookie).await)["roles"],
        json!(["admin"])
    );
    // A new password ends the sessions; removal ends the account.
    admin::set_password(store, "ROOT", "root-password-2").unwrap();
    assert_eq!(
        server
            .post("/auth/token", json!({}), Some(&cookie))
            .await
            .status,
        401
    );
    admin::remove_user(store, "root").unwrap();
    assert!(admin::remove_user(store, "root").is_err());
    let gone = server
        .post(
            "/auth/signin",
            json!({"name": "root", "password": "root-password-2"}),
            None,
        )
        .await;
    assert_eq!(gone.status, 401);
}

#[tokio::test]
async fn sessions_per_account_are_capped() {
    let server = start(|o| o.limits.sessions_per_account = 2).await;
    let first = server.signup("ivy").await;
    for _ in 0..2 {
        let signin = server
            .post(
                "/auth/signin",
                json!({"name": "ivy", "password": password("ivy")}),
                None,
            )
            .await;
        assert_eq!(signin.status, 200);
    }
    assert_eq!(server.apps.store().session_count("ivy").unwrap(), 2);
    assert_eq!(
        server
            .post("/auth/token", json!({}), Some(&first))
            .await
            .status,
        401,
        "the oldest session was evicted"
    );
}

#[tokio::test]
async fn external_tokens_only_turns_the_sign_in_endpoints_off() {
    let server = start(|o| o.external_tokens_only = true).await;
    assert_eq!(server.me(None).await["external"], true);
    for path in ["/auth/token", "/auth/signin", "/auth/signup", "/auth/guest"] {
        let off = server
            .post(
                path,
                json!({"name": "jo", "password": password("jo")}),
                None,
            )
            .await;
        assert_eq!(
            (off.status, code(&off).as_str()),
            (404, "external_tokens"),
            "{path}"
        );
    }
    assert_eq!(
        server.get("/signin", &[]).await.status,
        200,
        "the page still serves"
    );

    // A server that verifies RS256 tokens cannot mint: the same.
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/data/rs256-public.pem");
    {
        let rs = start_with(
            |c| {
                c.auth.token_algorithm = switchboard_server::config::TokenAlgorithm::RS256;
                c.auth.token_public_key_file = Some(key);
            },
            |_| {},
        )
        .await;
        assert_eq!(rs.me(None).await["external"], true);
        assert_eq!(rs.post("/auth/token", json!({}), None).await.status, 404);
    }
}
