//! End-to-end: registration, login, tokens and reading accounts (`/api/users`, `/api/auth/login`).
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{
    Api, PASSWORD, Role, assert_field_error, assert_problem, jwt_secret, mint_token, tamper_claims, tamper_signature,
    unique_email, unix_now, unknown_id, unsigned_token, without_correlation_id,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const USER_FIELDS: [&str; 6] = ["id", "email", "name", "phone", "role", "created_at"];

/// Asserts the public shape of a user and that nothing about its password leaks.
#[track_caller]
fn assert_public_user(user: &Value, password: &str) {
    let object = user.as_object().expect("a user is a JSON object");
    for field in USER_FIELDS {
        assert!(object.contains_key(field), "user lacks {field}: {user}");
    }
    for key in object.keys() {
        assert!(
            !key.to_ascii_lowercase().contains("password") && !key.to_ascii_lowercase().contains("hash"),
            "user exposes {key}: {user}"
        );
    }
    let text = user.to_string();
    assert!(!text.contains(password), "user body contains the password: {text}");
    assert!(!text.contains("$argon2"), "user body contains a password hash: {text}");
}

// ---------------------------------------------------------------------- registration

#[tokio::test]
async fn registering_creates_a_customer_and_never_returns_the_password() {
    let api = Api::from_env();
    let email = unique_email("register");

    // When someone registers with a mixed-case email
    let reply = api
        .post_json(
            "/api/users",
            None,
            &json!({"email": email.to_uppercase(), "password": PASSWORD, "name": "Ada Lovelace", "phone": "+14155550123"}),
        )
        .await;

    // Then a customer account exists, shown without its password and addressed by Location
    let user = reply.expect(201).clone();
    assert_public_user(&user, PASSWORD);
    assert_eq!(user["email"], email.as_str(), "the email is normalised to lower case");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["phone"], "+14155550123");
    assert_eq!(user["role"], "customer");
    let id = user["id"].as_str().expect("id").to_owned();
    let location = reply.header("location").expect("a Location header");
    assert!(
        location.ends_with(&format!("/api/users/{id}")),
        "Location {location} names the new user {id}"
    );

    // And its owner can log in and read it back
    let token = api.token(&email, PASSWORD).await;
    let me = api.get(&format!("/api/users/{id}"), Some(&token)).await;
    assert_eq!(me.expect(200), &user);
}

#[tokio::test]
async fn registering_a_taken_email_is_a_conflict_whatever_its_case_or_spacing() {
    let api = Api::from_env();
    let email = unique_email("taken");
    api.register(&email, PASSWORD, "First").await.expect(201);

    // When the same email registers again, as is or in another case with surrounding spaces
    for variant in [email.clone(), format!("  {}  ", email.to_uppercase())] {
        let reply = api.register(&variant, "another-password-123", "Second").await;
        // Then it is a 409 conflict
        assert_problem(&reply, 409);
    }

    // And the original account is untouched: its password still works, the second one does not
    api.token(&email, PASSWORD).await;
    api.assert_cannot_log_in(&email, "another-password-123").await;
}

#[tokio::test]
async fn a_password_under_8_characters_is_refused_and_creates_nothing() {
    let api = Api::from_env();
    let email = unique_email("short");

    // When someone registers with a 7-character password
    let reply = api.register(&email, "1234567", "Shorty").await;

    // Then it is a 400 naming the password
    assert_field_error(&reply, "password");
    // And no account was created: 8 characters is accepted for the same email
    api.assert_cannot_log_in(&email, "1234567").await;
    api.register(&email, "12345678", "Shorty").await.expect(201);
}

#[tokio::test]
async fn registering_as_admin_is_refused_and_the_account_stays_a_customer() {
    let api = Api::from_env();
    let email = unique_email("wannabe-admin");

    // When someone registers claiming the admin role
    let reply = api
        .post_json(
            "/api/users",
            None,
            &json!({"email": email, "password": PASSWORD, "name": "Mallory", "role": "admin"}),
        )
        .await;

    // Then it is a 400 naming role, and no account exists
    assert_field_error(&reply, "role");
    api.assert_cannot_log_in(&email, PASSWORD).await;

    // And a normal registration of that email then works and is a mere customer
    let user = api.register(&email, PASSWORD, "Mallory").await.expect(201).clone();
    assert_eq!(user["role"], "customer");
    let token = api.token(&email, PASSWORD).await;
    let me = api.get("/api/users/me", Some(&token)).await;
    assert_eq!(me.expect(200)["role"], "customer");
    // Who cannot do admin things
    let attempt = api
        .post_json(
            "/api/products",
            Some(&token),
            &json!({"name": "x", "category": "e2e-never", "price": 1, "stock_quantity": 1}),
        )
        .await;
    assert_problem(&attempt, 403);
}

#[tokio::test]
async fn registering_with_an_id_or_user_id_is_refused_and_creates_nothing() {
    let api = Api::from_env();
    for field in ["id", "user_id"] {
        let email = unique_email("chosen-id");
        let chosen = unknown_id();
        // When someone registers choosing their own id
        let mut body = json!({"email": email, "password": PASSWORD, "name": "Eve"});
        body[field] = json!(chosen);
        let reply = api.post_json("/api/users", None, &body).await;

        // Then it is a 400 naming that field, and nothing was created under that id or email
        assert_field_error(&reply, field);
        api.assert_cannot_log_in(&email, PASSWORD).await;
        let admin = api.admin_token().await;
        assert_problem(&api.get(&format!("/api/users/{chosen}"), Some(&admin)).await, 404);
    }
}

#[tokio::test]
async fn bad_registration_bodies_are_refused_and_create_nothing() {
    let api = Api::from_env();
    let huge_name = "n".repeat(70_000);

    // Each case: (what, email used, raw body, content type, expected status, field named in errors)
    type Case = (&'static str, String, String, &'static str, u16, Option<&'static str>);
    let cases: Vec<Case> = {
        let mut cases = Vec::new();
        let email = unique_email("malformed");
        let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}","name":"#);
        cases.push(("malformed JSON", email, body, "application/json", 400, Some("body")));
        let email = unique_email("missing");
        let body = json!({"email": email, "password": PASSWORD}).to_string();
        cases.push(("missing name", email, body, "application/json", 400, Some("name")));
        let email = unique_email("wrong-type");
        let body = json!({"email": email, "password": PASSWORD, "name": 42}).to_string();
        cases.push(("name as a number", email, body, "application/json", 400, Some("name")));
        let email = unique_email("unknown-field");
        let body = json!({"email": email, "password": PASSWORD, "name": "U", "nickname": "u"}).to_string();
        cases.push(("unknown field", email, body, "application/json", 400, Some("nickname")));
        let email = unique_email("huge");
        let body = json!({"email": email, "password": PASSWORD, "name": huge_name}).to_string();
        cases.push(("70 000-byte name", email, body, "application/json", 413, None));
        let email = unique_email("text-plain");
        let body = json!({"email": email, "password": PASSWORD, "name": "Plain"}).to_string();
        cases.push(("text/plain", email, body, "text/plain", 415, None));
        cases
    };

    for (what, email, body, content_type, status, field) in &cases {
        // When a registration body is bad in this way
        let reply = api
            .send_raw(Method::POST, "/api/users", None, content_type, body.clone())
            .await;
        // Then the API refuses it with the right problem
        match field {
            Some(field) => assert_field_error(&reply, field),
            None => {
                assert_problem(&reply, *status);
            }
        }
        assert_eq!(reply.status, *status, "{what}: {}", reply.describe());
        // And no account was created
        api.assert_cannot_log_in(email, PASSWORD).await;
    }

    // And the body refused as text/plain was otherwise valid: sent as JSON it registers
    let (_, email, body, ..) = &cases[5];
    let reply = api
        .send_raw(Method::POST, "/api/users", None, "application/json", body.clone())
        .await;
    reply.expect(201);
    api.token(email, PASSWORD).await;
}

// ---------------------------------------------------------------------- login

#[tokio::test]
async fn login_returns_a_bearer_token_that_identifies_the_user() {
    let api = Api::from_env();
    let email = unique_email("login");
    let user = api.register(&email, PASSWORD, "Login").await.expect(201).clone();

    // When the user logs in with the email in another case
    let reply = api.login(&email.to_uppercase(), PASSWORD).await;

    // Then it gets a bearer token with its lifetime
    let body = reply.expect(200);
    let token = body["access_token"].as_str().expect("access_token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["expires_in"].as_u64().is_some_and(|secs| secs > 0),
        "expires_in: {}",
        reply.text
    );
    // And the token says who it is
    let me = api.get("/api/users/me", Some(token)).await;
    assert_eq!(me.expect(200)["id"], user["id"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let api = Api::from_env();
    let email = unique_email("guess");
    api.register(&email, PASSWORD, "Guess").await.expect(201);

    // When someone logs in with a wrong password, and with an email nobody has
    let wrong_password = api.login(&email, "not-the-password").await;
    let unknown_email = api.login(&unique_email("nobody"), PASSWORD).await;

    // Then both are 401 problems that cannot be told apart (apart from the correlation id)
    let wrong = without_correlation_id(assert_problem(&wrong_password, 401));
    let unknown = without_correlation_id(assert_problem(&unknown_email, 401));
    assert_eq!(wrong, unknown, "the two failures must not reveal which emails exist");
    assert_eq!(
        wrong_password.header("www-authenticate"),
        unknown_email.header("www-authenticate")
    );
    assert!(wrong_password.json.get("access_token").is_none());
}

#[tokio::test]
async fn bad_login_bodies_are_refused_and_log_nobody_in() {
    let api = Api::from_env();
    let customer = api.customer().await;
    let credentials = json!({"email": customer.email, "password": customer.password});

    let cases: Vec<(&str, String, &str, u16, Option<&str>)> = vec![
        (
            "malformed JSON",
            format!(r#"{{"email":"{}","password":"#, customer.email),
            "application/json",
            400,
            Some("body"),
        ),
        (
            "missing password",
            json!({"email": customer.email}).to_string(),
            "application/json",
            400,
            Some("password"),
        ),
        (
            "email as a number",
            json!({"email": 42, "password": PASSWORD}).to_string(),
            "application/json",
            400,
            Some("email"),
        ),
        (
            "unknown field",
            json!({"email": customer.email, "password": PASSWORD, "remember_me": true}).to_string(),
            "application/json",
            400,
            Some("remember_me"),
        ),
        (
            "70 000-byte password",
            json!({"email": customer.email, "password": "p".repeat(70_000)}).to_string(),
            "application/json",
            413,
            None,
        ),
        (
            "valid credentials as text/plain",
            credentials.to_string(),
            "text/plain",
            415,
            None,
        ),
    ];
    for (what, body, content_type, status, field) in cases {
        // When a login body is bad in this way
        let reply = api
            .send_raw(Method::POST, "/api/auth/login", None, content_type, body)
            .await;
        // Then it is refused with the right problem and no token
        match field {
            Some(field) => assert_field_error(&reply, field),
            None => {
                assert_problem(&reply, status);
            }
        }
        assert_eq!(reply.status, status, "{what}: {}", reply.describe());
        assert!(reply.json.get("access_token").is_none(), "{what}: {}", reply.text);
    }

    // And the account still logs in normally
    api.token(&customer.email, &customer.password).await;
}

// ---------------------------------------------------------------------- /api/users/me and tokens

#[tokio::test]
async fn me_returns_the_callers_own_account() {
    let api = Api::from_env();
    let customer = api.customer().await;

    let reply = api.get("/api/users/me", Some(&customer.token)).await;

    let me = reply.expect(200);
    assert_public_user(me, &customer.password);
    assert_eq!(me["id"], customer.id.as_str());
    assert_eq!(me["email"], customer.email.as_str());
    assert_eq!(me["role"], "customer");
}

#[tokio::test]
async fn me_refuses_missing_malformed_and_forged_tokens() {
    let api = Api::from_env();
    let customer = api.customer().await;
    let tampered_signature = tamper_signature(&customer.token);
    let promoted = tamper_claims(&customer.token, |claims| claims["role"] = json!("admin"));
    let unsigned = unsigned_token(&customer.id, "admin");
    let foreign_key = mint_token(
        "some-other-secret-0123456789-abcdefghij",
        &customer.id,
        Role::Customer,
        unix_now(),
    );

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("garbage bearer token", Some("Bearer abc".into())),
        ("empty bearer token", Some("Bearer ".into())),
        ("another scheme", Some(format!("Basic {}", customer.token))),
        (
            "a char of the signature flipped",
            Some(format!("Bearer {tampered_signature}")),
        ),
        ("claims changed to admin", Some(format!("Bearer {promoted}"))),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        ("signed with another key", Some(format!("Bearer {foreign_key}"))),
    ];
    for (what, authorization) in cases {
        // When /me is called with this credential
        let reply = match &authorization {
            None => api.get("/api/users/me", None).await,
            Some(value) => api.get_authorized("/api/users/me", value).await,
        };
        // Then it is a 401 problem revealing nothing
        assert_eq!(reply.status, 401, "{what}: {}", reply.describe());
        assert_problem(&reply, 401);
        assert!(reply.json.get("email").is_none(), "{what}: {}", reply.text);
    }

    // And the forged admin tokens do not open admin routes either
    for forged in [&promoted, &unsigned] {
        let attempt = api
            .post_json(
                "/api/products",
                Some(forged),
                &json!({"name": "x", "category": "e2e-never", "price": 1, "stock_quantity": 1}),
            )
            .await;
        assert_problem(&attempt, 401);
    }
}

#[tokio::test]
async fn me_refuses_an_expired_token() {
    let api = Api::from_env();
    let Some(secret) = jwt_secret() else {
        eprintln!("SHOP_JWT_SECRET is not set: cannot mint an expired token; `make test-e2e` sets it");
        return;
    };
    let customer = api.customer().await;

    // Given a token the deployment's key signed, for a real user (control: a fresh one works)
    let fresh = mint_token(&secret, &customer.id, Role::Customer, unix_now());
    let control = api.get("/api/users/me", Some(&fresh)).await;
    assert_eq!(
        control.status,
        200,
        "SHOP_JWT_SECRET does not match the stack's key: {}",
        control.describe()
    );

    // When the same token was issued two hours ago (so expired an hour ago)
    let expired = mint_token(&secret, &customer.id, Role::Customer, unix_now() - 7200);
    let reply = api.get("/api/users/me", Some(&expired)).await;

    // Then it is refused with 401
    assert_problem(&reply, 401);
}

#[tokio::test]
async fn a_valid_token_for_a_user_that_does_not_exist_reads_nothing() {
    let api = Api::from_env();
    let Some(secret) = jwt_secret() else {
        eprintln!("SHOP_JWT_SECRET is not set: cannot mint a token; `make test-e2e` sets it");
        return;
    };
    let ghost = unknown_id();
    let token = mint_token(&secret, &ghost, Role::Customer, unix_now());

    // When a correctly signed token names a user that does not exist
    let me = api.get("/api/users/me", Some(&token)).await;
    let own = api.get(&format!("/api/users/{ghost}"), Some(&token)).await;

    // Then no account is shown: /me refuses the credential (401, or 404 for the missing account) and the
    // account's own id is not found
    assert!(matches!(me.status, 401 | 404), "GET /api/users/me: {}", me.describe());
    assert_problem(&me, me.status);
    assert_problem(&own, 404);
}

// ---------------------------------------------------------------------- /api/users/{id}

#[tokio::test]
async fn an_account_is_readable_by_its_owner_and_admins_only() {
    let api = Api::from_env();
    let alice = api.customer().await;
    let bob = api.customer().await;
    let admin = api.admin_token().await;
    let alice_path = format!("/api/users/{}", alice.id);

    // The owner reads it
    let own = api.get(&alice_path, Some(&alice.token)).await;
    assert_eq!(own.expect(200)["email"], alice.email.as_str());
    assert_public_user(&own.json, PASSWORD);

    // Another customer is told it does not exist, exactly as for an id nobody has
    let other = api.get(&alice_path, Some(&bob.token)).await;
    let nobody = api.get(&format!("/api/users/{}", unknown_id()), Some(&bob.token)).await;
    assert_eq!(
        without_correlation_id(assert_problem(&other, 404)),
        without_correlation_id(assert_problem(&nobody, 404)),
        "another user's account must look exactly like a missing one"
    );
    assert!(!other.text.contains(&alice.email));

    // An admin reads any account
    let by_admin = api.get(&alice_path, Some(&admin)).await;
    assert_eq!(by_admin.expect(200), &own.json);

    // Without a token nobody does
    assert_problem(&api.get(&alice_path, None).await, 401);
}

#[tokio::test]
async fn unknown_and_malformed_user_ids_are_not_found() {
    let api = Api::from_env();
    let admin = api.admin_token().await;
    let customer = api.customer().await;

    for id in [
        unknown_id(),
        "not-an-id".to_owned(),
        "USER%23x".to_owned(),
        "12345".to_owned(),
    ] {
        for token in [&admin, &customer.token] {
            // When an existing caller asks for an id nobody has, or that is no id at all
            let reply = api.get(&format!("/api/users/{id}"), Some(token)).await;
            // Then it is 404
            assert_eq!(reply.status, 404, "GET /api/users/{id}: {}", reply.describe());
            assert_problem(&reply, 404);
        }
    }
}

/// Status, problem type and Retry-After of each login attempt.
type Attempt = (u16, Option<String>, Option<String>);

/// Fails to log in as `email` the way a guesser would, respecting each pause it is told to take:
/// the stack locks an email after 4 failures for 4 s, slowing down from the 2nd.
async fn guess_until_locked(api: &Api, email: &str) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut record = |reply: &e2e::Reply| {
        attempts.push((
            reply.status,
            reply.json["type"].as_str().map(str::to_owned),
            reply.header("retry-after").map(str::to_owned),
        ));
        reply.header("retry-after").and_then(|secs| secs.parse::<u64>().ok())
    };
    for _ in 0..2 {
        record(&api.login(email, "wrong-password-123").await);
    }
    for _ in 0..2 {
        // Straight away: told to wait; after waiting: heard (and refused).
        let pause = record(&api.login(email, "wrong-password-123").await).expect("a pause");
        tokio::time::sleep(Duration::from_secs(pause)).await;
        record(&api.login(email, "wrong-password-123").await);
    }
    attempts
}

#[tokio::test]
async fn failed_logins_for_one_email_slow_down_then_lock_alike_for_known_and_unknown_emails() {
    let api = Api::from_env().returning_throttled();
    let customer = api.customer().await;
    let unknown = unique_email("never-registered");

    // When someone guesses passwords for an account and for an address nobody registered
    let (known_attempts, unknown_attempts) = tokio::join!(
        guess_until_locked(&api, &customer.email),
        guess_until_locked(&api, &unknown)
    );

    // Then both see 401, 401, then alternating pauses (1 s, then 2 s) and 401s: the same answers
    let statuses: Vec<u16> = known_attempts.iter().map(|attempt| attempt.0).collect();
    assert_eq!(statuses, [401, 401, 429, 401, 429, 401], "{known_attempts:?}");
    assert_eq!(known_attempts[2].1.as_deref(), Some("/problems/too-many-failed-logins"));
    let pause = |attempts: &[Attempt], at: usize| attempts[at].2.as_deref().and_then(|secs| secs.parse::<u64>().ok());
    for attempts in [&known_attempts, &unknown_attempts] {
        assert_eq!(pause(attempts, 2), Some(1), "{attempts:?}");
        // (2 s after the failure, less the time the request took: rounded up, 2 unless it was slow)
        assert!(matches!(pause(attempts, 4), Some(1..=2)), "{attempts:?}");
    }
    let answers = |attempts: &[Attempt]| -> Vec<(u16, Option<String>)> {
        attempts
            .iter()
            .map(|(status, kind, _)| (*status, kind.clone()))
            .collect()
    };
    assert_eq!(answers(&known_attempts), answers(&unknown_attempts));

    // And now the account is locked: even the right password is refused, as for the unknown address
    let locked = api.login(&customer.email, &customer.password).await;
    let body = assert_problem(&locked, 429);
    assert_eq!(body["type"], "/problems/too-many-failed-logins");
    let lock: u64 = locked
        .header("retry-after")
        .and_then(|secs| secs.parse().ok())
        .expect("Retry-After");
    assert!((1..=4).contains(&lock), "a lock of {lock} s");
    let unknown_locked = api.login(&unknown, &customer.password).await;
    assert_eq!(without_correlation_id(&unknown_locked.json)["type"], body["type"]);

    // And after the lock, the owner signs in; the slate is clean
    tokio::time::sleep(Duration::from_secs(lock)).await;
    let token = api.token(&customer.email, &customer.password).await;
    api.get("/api/users/me", Some(&token)).await.expect(200);
    api.login(&customer.email, "wrong-password-123").await.expect(401);
}
