//! People who sign in to the dashboard (issue 11): the management API, and sessions over real
//! HTTP as a browser drives them (cookies, CSRF, lockout, expiry). The browser itself is in
//! tests/browser.

use std::collections::HashMap;

use axum::http::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{spawn, spawn_with, TestServer};

const GOOD: &str = "correct horse battery staple";

async fn create(s: &TestServer, name: &str, role: &str, products: &[&str]) -> (u16, Value) {
    s.call(
        Method::POST,
        "/api/v1/people",
        Some(&s.admin),
        Some(json!({"name": name, "role": role, "products": products})),
    )
    .await
}

async fn initial_password(s: &TestServer, name: &str, role: &str) -> String {
    let (st, v) = create(s, name, role, &[]).await;
    assert_eq!(st, 201, "{v}");
    v["initial_password"].as_str().unwrap().to_string()
}

async fn audit(s: &TestServer, query: &str) -> Vec<Value> {
    let (st, v) = s
        .call(
            Method::GET,
            &format!("/api/v1/audit?{query}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

/// A browser's view of the dashboard: its cookies, no automatic redirects.
struct Browser {
    url: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// The `Set-Cookie` values of the last answer.
    set_cookies: Vec<String>,
}

/// An answer: status, `Location`, headers, body.
struct Page {
    status: u16,
    location: String,
    headers: HeaderMap,
    body: String,
}

impl Page {
    /// The value of the first `csrf` field of the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    fn new(s: &TestServer) -> Browser {
        Browser {
            url: s.url.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let r = if cookie.is_empty() {
            r
        } else {
            r.header("cookie", cookie)
        };
        let resp = r.send().await.unwrap();
        self.set_cookies.clear();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap().to_string();
            let (kv, attrs) = v.split_once(';').unwrap_or((&v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
            self.set_cookies.push(v.clone());
        }
        Page {
            status: resp.status().as_u16(),
            location: resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string())
                .unwrap_or_default(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.http.get(format!("{}{path}", self.url));
        self.send(r).await
    }

    /// Posts a form as a page of the dashboard does (its own `Origin`, same-origin fetch).
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.url.clone();
        self.post_from(path, form, &origin, "same-origin").await
    }

    async fn post_from(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: &str,
        fetch_site: &str,
    ) -> Page {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("origin", origin)
            .header("sec-fetch-site", fetch_site)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(r).await
    }

    /// Signs in with the form; returns the answer to the form's POST.
    async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/ui/sign-in").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/ui/sign-in",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }

    /// Changes the password on the password page.
    async fn change_password(&mut self, current: &str, new: &str) -> Page {
        let page = self.get("/ui/password").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page.csrf();
        self.post(
            "/ui/password",
            &[
                ("csrf", &csrf),
                ("current", current),
                ("new", new),
                ("confirm", new),
            ],
        )
        .await
    }

    fn session(&self) -> Option<String> {
        self.cookies.get("__Host-otter_session").cloned()
    }
}

#[tokio::test]
async fn admins_create_list_and_disable_people() {
    let s = spawn().await;
    let (st, v) = create(&s, "ada", "admin", &[]).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["person"]["name"], "ada");
    assert_eq!(v["person"]["must_change_password"], true);
    let initial = v["initial_password"].as_str().unwrap();
    assert!(initial.len() >= 20, "{initial}");
    let id = v["person"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("per_"), "{id}");
    assert!(
        !v.to_string().contains("argon2"),
        "no hash in the answer: {v}"
    );

    // Bad input is refused and creates nothing.
    s.product("lamp", otter_core::Chip::Esp32).await;
    for (name, role, products, status) in [
        ("ada", "viewer", vec![], 409),
        ("bad name", "viewer", vec![], 400),
        ("", "viewer", vec![], 400),
        ("pub", "publisher", vec![], 400),
        ("pub", "publisher", vec!["nope"], 400),
        ("view", "viewer", vec!["lamp"], 400),
        ("who", "root", vec![], 400),
    ] {
        let (st, v) = create(&s, name, role, &products).await;
        assert_eq!(st, status, "{name} {role} {products:?}: {v}");
    }
    let (st, v) = create(&s, "pub", "publisher", &["lamp"]).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["person"]["products"], json!(["lamp"]));

    let (st, v) = s
        .call(Method::GET, "/api/v1/people", Some(&s.admin), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "pub"]);
    assert!(v["next"].is_null(), "{v}");
    // Pages, by name.
    let (_, first) = s
        .call(Method::GET, "/api/v1/people?limit=1", Some(&s.admin), None)
        .await;
    assert_eq!(first["people"][0]["name"], "ada");
    let next = first["next"].as_str().unwrap();
    let (_, second) = s
        .call(
            Method::GET,
            &format!("/api/v1/people?limit=1&cursor={next}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(second["people"][0]["name"], "pub");
    assert!(second["next"].is_null(), "{second}");
    let (st, v) = s
        .call(
            Method::GET,
            "/api/v1/people?cursor=nope",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("bad_cursor")));

    // Viewers and publishers change nothing and read nothing here.
    for role in ["viewer", "publisher"] {
        let token = s
            .token(role, if role == "publisher" { &["lamp"] } else { &[] })
            .await;
        let (st, _) = s
            .call(
                Method::POST,
                "/api/v1/people",
                Some(&token),
                Some(json!({"name": "eve", "role": "admin"})),
            )
            .await;
        assert_eq!(st, 403, "{role}");
        let (st, _) = s
            .call(Method::GET, "/api/v1/people", Some(&token), None)
            .await;
        assert_eq!(st, 403, "{role}");
        let (st, _) = s
            .call(
                Method::POST,
                "/api/v1/people/ada/disable",
                Some(&token),
                None,
            )
            .await;
        assert_eq!(st, 403, "{role}");
    }

    let (st, v) = s
        .call(
            Method::POST,
            "/api/v1/people/ada/disable",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["disabled_at"].is_string(), "{v}");
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/people/ada/disable",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 409);
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/people/nobody/disable",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Every attempt is recorded, refused ones too; targets are person ids.
    let created: Vec<Value> = audit(&s, "action=person.create")
        .await
        .into_iter()
        .filter(|e| e["status"] == 201)
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(created[1]["target"], id.as_str());
    assert!(created[1]["detail"]
        .as_str()
        .unwrap()
        .contains("name=ada role=admin"));
    let refused = audit(&s, "action=person.create&actor=viewer-test").await;
    assert_eq!(refused[0]["status"], 403, "{refused:?}");
    let disabled = audit(&s, &format!("action=person.disable&target={id}")).await;
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0]["status"], 200);
    assert_eq!(disabled[0]["detail"], "name=ada");
}

#[tokio::test]
async fn a_person_signs_in_changes_the_initial_password_and_signs_out() {
    let s = spawn().await;
    let initial = initial_password(&s, "ada", "admin").await;
    let mut b = Browser::new(&s);

    // Not signed in: every page sends to the sign-in page, which comes back after.
    let p = b.get("/ui/people?x=1").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location, "/ui/sign-in?next=/ui/people%3Fx%3D1");
    assert_eq!(b.get("/ui/no-such-page").await.status, 303);

    let p = b.sign_in("ada", &initial).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.location, "/ui/password",
        "the initial password must be changed"
    );
    let cookie = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-otter_session="))
        .unwrap()
        .clone();
    for attr in ["; Path=/", "; HttpOnly", "; SameSite=Strict", "; Secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let first_session = b.session().unwrap();
    // Until it is changed, every page leads to the password page.
    let p = b.get("/ui/people").await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/password"));

    // The password page refuses a short password, a wrong current one and a cross-site post.
    let p = b.change_password(&initial, "short").await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("12 to 256 characters"), "{}", p.body);
    let p = b.change_password("not it", GOOD).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("current password is wrong"), "{}", p.body);
    let csrf = b.get("/ui/password").await.csrf();
    let form = [
        ("csrf", csrf.as_str()),
        ("current", initial.as_str()),
        ("new", GOOD),
        ("confirm", GOOD),
    ];
    let p = b
        .post_from("/ui/password", &form, "http://evil.example", "cross-site")
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let p = b
        .post_from("/ui/password", &form, "http://127.0.0.1:1", "same-site")
        .await;
    assert_eq!(p.status, 403);
    let wrong = [
        ("csrf", "guessed"),
        ("current", initial.as_str()),
        ("new", GOOD),
        ("confirm", GOOD),
    ];
    assert_eq!(b.post("/ui/password", &wrong).await.status, 403);

    let p = b.change_password(&initial, GOOD).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/"), "{}", p.body);
    // A new session; the old one ended with the password change.
    let second_session = b.session().unwrap();
    assert_ne!(first_session, second_session);
    let p = b.get("/ui/").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.headers["content-security-policy"], otterd::dashboard::CSP);
    assert!(
        p.body.contains("Signed in as <strong>ada</strong>"),
        "{}",
        p.body
    );
    let people = b.get("/ui/people").await;
    assert_eq!(people.status, 200);
    assert!(people.body.contains("data-person=\"ada\""));
    let mut old = Browser::new(&s);
    old.cookies
        .insert("__Host-otter_session".into(), first_session);
    assert_eq!(old.get("/ui/").await.status, 303);

    // The initial password no longer works; the new one does.
    let mut other = Browser::new(&s);
    assert_eq!(other.sign_in("ada", &initial).await.status, 401);
    let p = other.sign_in("ada", GOOD).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/"));

    // Sign-out ends this session only.
    let csrf = b.get("/ui/").await.csrf();
    let p = b.post("/ui/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/ui/sign-in?why=signed-out")
    );
    assert!(b.session().is_none());
    b.cookies
        .insert("__Host-otter_session".into(), second_session);
    assert_eq!(b.get("/ui/").await.status, 303);
    assert_eq!(other.get("/ui/").await.status, 200);

    let actions: Vec<String> = audit(&s, "actor=ada")
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "person.sign_out",
            "person.sign_in",
            "person.sign_in_failed",
            "person.password_change",
            "person.sign_in"
        ]
    );
    let e = &audit(&s, "action=person.sign_in&limit=1").await[0];
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["role"], "admin", "{e}");
    assert!(e["token_id"].as_str().unwrap().starts_with("per_"), "{e}");
}

#[tokio::test]
async fn wrong_passwords_lock_a_person_out_and_limit_an_address() {
    let s = spawn_with(|c| {
        c.dashboard_failures_before_lockout = 2;
        c.dashboard_lockout_s = 600;
        c.dashboard_address_failures_per_minute = 1;
        c.dashboard_address_failures_burst = 5;
    })
    .await;
    let initial = initial_password(&s, "ada", "viewer").await;
    let mut b = Browser::new(&s);
    let p = b.sign_in("ada", "wrong one").await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("Wrong name or password."), "{}", p.body);
    assert!(b.session().is_none());
    let p = b.sign_in("ada", "wrong two").await;
    assert_eq!(p.status, 401);
    // Locked now, but the answer does not say so: that would tell which names exist.
    assert!(p.body.contains("Wrong name or password."), "{}", p.body);
    assert!(!p.body.contains("locked"), "{}", p.body);
    // Locked: the right password does not help, and the answer is a wrong password's.
    let p = b.sign_in("ada", &initial).await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("Wrong name or password."), "{}", p.body);
    assert!(b.session().is_none());
    // An admin sees it.
    let (_, v) = s
        .call(Method::GET, "/api/v1/people", Some(&s.admin), None)
        .await;
    assert!(v["people"][0]["locked_until"].is_string(), "{v}");

    // Every attempt spends from the address's budget, before any password is checked (so a
    // burst of simultaneous attempts cannot all pass): two more use up its burst of 5.
    assert_eq!(b.sign_in("nobody", "x").await.status, 401);
    assert_eq!(b.sign_in("nobody", "y").await.status, 401);
    let p = b.sign_in("other", "z").await;
    assert_eq!(p.status, 429);
    assert!(p.body.contains("from your address"), "{}", p.body);

    // A sign-in form without its own cookie's token is refused, and nothing is checked.
    let mut fresh = Browser::new(&s);
    let p = fresh
        .post(
            "/ui/sign-in",
            &[("csrf", "made-up"), ("name", "ada"), ("password", "x")],
        )
        .await;
    assert_eq!(p.status, 403);

    let failed = audit(&s, "action=person.sign_in_failed").await;
    assert_eq!(failed.len(), 6, "{failed:?}");
    assert_eq!(failed[5]["target"], "ada");
    assert_eq!(failed[5]["actor"], "ada");
    assert!(failed[4]["detail"]
        .as_str()
        .unwrap()
        .contains("locked for 600 s"));
}

#[tokio::test]
async fn sessions_end_at_their_absolute_end_and_when_the_person_is_disabled() {
    let s = spawn_with(|c| {
        c.dashboard_session_idle_s = 2;
        c.dashboard_session_max_s = 2;
    })
    .await;
    let initial = initial_password(&s, "ada", "admin").await;
    let mut b = Browser::new(&s);
    b.sign_in("ada", &initial).await;
    assert_eq!(b.change_password(&initial, GOOD).await.status, 303);
    // Used all the time, but past its absolute end.
    let mut ended = false;
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let p = b.get("/ui/").await;
        if p.status == 303 {
            assert_eq!(p.location, "/ui/sign-in?next=/ui/&why=expired");
            ended = true;
            break;
        }
        assert_eq!(p.status, 200);
    }
    assert!(ended, "the session outlived session_max_s");

    // Disabling a person ends their session at once, and they cannot sign in again.
    let p = b.sign_in("ada", GOOD).await;
    assert_eq!(p.status, 303);
    assert_eq!(b.get("/ui/").await.status, 200);
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/people/ada/disable",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let p = b.get("/ui/").await;
    assert_eq!(p.status, 303);
    let p = b.sign_in("ada", GOOD).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("This account is disabled."), "{}", p.body);
}

#[tokio::test]
async fn admins_manage_people_on_the_page_and_viewers_cannot() {
    let s = spawn().await;
    let initial = initial_password(&s, "ada", "admin").await;
    let mut admin = Browser::new(&s);
    admin.sign_in("ada", &initial).await;
    admin.change_password(&initial, GOOD).await;

    let csrf = admin.get("/ui/people").await.csrf();
    let p = admin
        .post(
            "/ui/people",
            &[
                ("csrf", &csrf),
                ("name", "vic"),
                ("role", "viewer"),
                ("products", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.body);
    let start = p.body.find("id=\"initial-password\">").unwrap() + 22;
    let vic_initial = p.body[start..start + p.body[start..].find('<').unwrap()].to_string();

    let p = admin
        .post(
            "/ui/people",
            &[("csrf", &csrf), ("name", "vic"), ("role", "viewer")],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("exists already"), "{}", p.body);

    // The viewer signs in with the password the page showed, and is refused the people page.
    let mut vic = Browser::new(&s);
    assert_eq!(vic.sign_in("vic", &vic_initial).await.status, 303);
    vic.change_password(&vic_initial, GOOD).await;
    let p = vic.get("/ui/").await;
    assert_eq!(p.status, 200);
    assert!(
        !p.body.contains("href=\"/ui/people\""),
        "no People link for viewers"
    );
    let p = vic.get("/ui/people").await;
    assert_eq!(p.status, 403);
    let vic_csrf = p.csrf_or_none();
    assert!(vic_csrf.is_none());
    let own = vic.get("/ui/").await.csrf();
    let p = vic
        .post(
            "/ui/people",
            &[("csrf", &own), ("name", "eve"), ("role", "admin")],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = vic.post("/ui/people/ada/disable", &[("csrf", &own)]).await;
    assert_eq!(p.status, 403);

    // The admin disables the viewer from the page.
    let p = admin
        .post("/ui/people/vic/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/people"));
    assert_eq!(vic.get("/ui/").await.status, 303);

    // Successes and refusals alike are in the log, as the API's are.
    let created = audit(&s, "action=person.create&actor=ada").await;
    let statuses: Vec<i64> = created
        .iter()
        .map(|e| e["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 201], "{created:?}");
    assert!(created.iter().all(|e| e["route"] == "/ui/people"));
    assert!(created[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("refused:"));
    let disabled = audit(&s, "action=person.disable&actor=ada").await;
    assert_eq!(disabled.len(), 1);
    for action in ["person.create", "person.disable"] {
        let by_vic = audit(&s, &format!("action={action}&actor=vic")).await;
        assert_eq!(by_vic.len(), 1, "{action}: {by_vic:?}");
        assert_eq!(by_vic[0]["status"], 403);
    }
}

#[tokio::test]
async fn a_sign_in_form_in_another_tab_still_works() {
    let s = spawn().await;
    let initial = initial_password(&s, "ada", "viewer").await;
    let mut b = Browser::new(&s);
    let first = b.get("/ui/sign-in").await.csrf();
    let second = b.get("/ui/sign-in").await.csrf();
    assert_eq!(first, second, "one token per browser, not per form");
    let p = b
        .post(
            "/ui/sign-in",
            &[("csrf", &first), ("name", "ada"), ("password", &initial)],
        )
        .await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/password"));
    // Another browser's token is not this one's.
    let mut other = Browser::new(&s);
    other.get("/ui/sign-in").await;
    let p = other
        .post(
            "/ui/sign-in",
            &[("csrf", &first), ("name", "ada"), ("password", &initial)],
        )
        .await;
    assert_eq!(p.status, 403);
}

#[tokio::test]
async fn cookies_lose_secure_and_the_host_prefix_only_when_configured() {
    let s = spawn_with(|c| c.dashboard_secure_cookies = false).await;
    let initial = initial_password(&s, "ada", "viewer").await;
    let mut b = Browser::new(&s);
    let p = b.sign_in("ada", &initial).await;
    assert_eq!(p.status, 303);
    let cookie = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("otter_session="))
        .unwrap_or_else(|| panic!("{:?}", b.set_cookies));
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(cookie.contains("; HttpOnly; SameSite=Strict"), "{cookie}");
    assert_eq!(b.get("/ui/password").await.status, 200);
}

#[tokio::test]
async fn the_offline_command_creates_an_admin_person() {
    let s = spawn().await;
    let settings = otterd::config::Settings {
        data_dir: s.data_dir(),
        database_url: crate::backends::database_setting_for(&s.data_dir()),
        ..Default::default()
    };
    let password = otterd::admin::create_admin_person(&settings, "rescue")
        .await
        .unwrap();
    let mut b = Browser::new(&s);
    let p = b.sign_in("rescue", &password).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/ui/password"));
    let e = &audit(&s, "action=person.create").await[0];
    assert_eq!(e["actor"], "otterd admin (offline)");
    assert!(otterd::admin::create_admin_person(&settings, "rescue")
        .await
        .is_err());
}

impl Page {
    fn csrf_or_none(&self) -> Option<String> {
        self.body.contains("name=\"csrf\"").then(|| self.csrf())
    }
}

/// A stolen session is no way to guess a person's password: wrong current passwords on the
/// password page count towards the sign-in lockout, and the lockout signs the person out.
#[tokio::test]
async fn wrong_current_passwords_lock_the_person_out_and_end_the_session() {
    let s = spawn_with(|c| {
        c.dashboard_failures_before_lockout = 3;
        c.dashboard_lockout_s = 600;
    })
    .await;
    let initial = initial_password(&s, "ada", "viewer").await;
    let mut b = Browser::new(&s);
    assert_eq!(b.sign_in("ada", &initial).await.status, 303);
    assert_eq!(b.change_password(&initial, GOOD).await.status, 303);
    for guess in ["guess one", "guess two"] {
        let p = b.change_password(guess, "another good password").await;
        assert_eq!(p.status, 400);
        assert!(p.body.contains("current password is wrong"), "{}", p.body);
    }
    let p = b
        .change_password("guess three", "another good password")
        .await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("locked and signed out"), "{}", p.body);
    // The session is gone, and the right password does not sign in while locked.
    let p = b.get("/ui/").await;
    assert_eq!(p.status, 303);
    assert!(p.location.starts_with("/ui/sign-in"), "{}", p.location);
    let mut again = Browser::new(&s);
    assert_eq!(again.sign_in("ada", GOOD).await.status, 401);
    let (_, v) = s
        .call(Method::GET, "/api/v1/people", Some(&s.admin), None)
        .await;
    assert!(v["people"][0]["locked_until"].is_string(), "{v}");
}
