//! NATS JWTs (decentralized authentication, version 2): an operator, accounts and users as
//! claims signed with Ed25519 NKeys, and the `.creds` file a client connects with.
//!
//! The format is NATS's own (`nats-io/jwt` v2): a header `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! the claims, and the signer's Ed25519 signature over `header.claims`, each part base64url
//! without padding. The server checks the signature chain operator → account → user.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Error, Permissions};

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Seconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Encodes `nats` claims about `subject` (a public key), signed by `issuer`.
fn encode(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    expires: Option<u64>,
    nats: Value,
) -> Result<String, Error> {
    let mut claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase(),
        "iat": now(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    if let Some(exp) = expires {
        claims["exp"] = json!(exp);
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The operator's self-signed JWT, naming the system account.
pub fn operator(operator: &KeyPair, system_account: &str) -> Result<String, Error> {
    encode(
        operator,
        &operator.public_key(),
        "switchyard",
        None,
        json!({"type": "operator", "version": 2, "system_account": system_account}),
    )
}

/// An account's JWT, signed by the operator. With `jetstream`, the account may store
/// without limit (the server's own `max_file_store` still applies).
pub fn account(
    operator: &KeyPair,
    account: &KeyPair,
    name: &str,
    jetstream: bool,
) -> Result<String, Error> {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    encode(
        operator,
        &account.public_key(),
        name,
        None,
        json!({
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        }),
    )
}

/// The `pub`/`sub`/`resp` part of a user JWT.
#[derive(Serialize)]
struct UserPermissions<'a> {
    #[serde(rename = "pub")]
    publish: Allow<'a>,
    #[serde(rename = "sub")]
    subscribe: Allow<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp: Option<Value>,
}

#[derive(Serialize)]
struct Allow<'a> {
    allow: &'a [String],
}

/// A user's JWT, signed by its account: `name`, what it may publish and subscribe to, and
/// an optional expiry (seconds since the epoch).
pub fn user(
    account: &KeyPair,
    user_public_key: &str,
    name: &str,
    permissions: &Permissions,
    expires: Option<u64>,
) -> Result<String, Error> {
    let perms = UserPermissions {
        publish: Allow {
            allow: &permissions.publish,
        },
        subscribe: Allow {
            allow: &permissions.subscribe,
        },
        // A service may answer the requests it receives, whatever their reply subject.
        resp: permissions.responses.then(|| json!({"max": 1, "ttl": 0})),
    };
    let mut nats = serde_json::to_value(perms).map_err(|e| Error::Key(e.to_string()))?;
    for (key, value) in [
        ("subs", json!(-1)),
        ("data", json!(-1)),
        ("payload", json!(-1)),
        ("type", json!("user")),
        ("version", json!(2)),
    ] {
        nats[key] = value;
    }
    encode(account, user_public_key, name, expires, nats)
}

/// A `.creds` file: the user's JWT and its NKey seed, in the layout NATS clients read.
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The claims of a JWT, without checking its signature (for tests and `inspect`).
pub fn claims(jwt: &str) -> Option<Value> {
    let part = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_jwt_is_signed_by_its_account_and_carries_its_permissions() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let permissions = Permissions {
            publish: vec!["wf.start.acme.>".into()],
            subscribe: vec!["wf.events.acme.>".into()],
            responses: false,
        };
        let jwt =
            super::user(&account, &user.public_key(), "acme", &permissions, Some(42)).expect("jwt");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64");
        let signed = format!("{}.{}", parts[0], parts[1]);
        KeyPair::from_public_key(&account.public_key())
            .expect("public key")
            .verify(signed.as_bytes(), &signature)
            .expect("the account's signature verifies");
        let claims = claims(&jwt).expect("claims");
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(claims["exp"], 42);
        assert_eq!(claims["nats"]["type"], "user");
        assert_eq!(claims["nats"]["pub"]["allow"], json!(["wf.start.acme.>"]));
        assert_eq!(claims["nats"]["sub"]["allow"], json!(["wf.events.acme.>"]));
        assert!(claims["nats"].get("resp").is_none());
    }
}
