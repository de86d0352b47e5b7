//! Bearer-token authentication and the role → permission table.
//!
//! A token is a JWT signed with HS256 (a shared secret) or RS256 (a public key), carrying
//! `sub`, `tenant`, `roles`, `iss`, `aud`, `exp` and optionally `nbf`. The tenant of every
//! request comes from the token only.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use switchyard_runtime::config::{AuthSettings, JwtAlgorithm, Problem};

use crate::Error;

/// A role named in a token's `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    /// Everything within the token's tenant.
    Admin,
    /// The deployment's operator: an admin who may also read about other tenants (`tenant=`
    /// on `/usage` and `/audit`, and the refused credentials under `_anonymous`). Not a role
    /// to give a tenant.
    Platform,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "platform" => Some(Role::Platform),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Platform => "platform",
        }
    }
}

pub use crate::permission::Permission;

/// The one table of what each role may do.
pub const ROLE_PERMISSIONS: [(Role, &[Permission]); 4] = [
    (
        Role::Viewer,
        &[Permission::WorkflowsRead, Permission::RegistryRead],
    ),
    (
        Role::Operator,
        &[
            Permission::WorkflowsRead,
            Permission::RegistryRead,
            Permission::WorkflowsRun,
        ],
    ),
    (
        Role::Admin,
        &[
            Permission::WorkflowsRead,
            Permission::RegistryRead,
            Permission::WorkflowsRun,
            Permission::DefinitionsWrite,
            Permission::AuditRead,
        ],
    ),
    (
        Role::Platform,
        &[
            Permission::WorkflowsRead,
            Permission::RegistryRead,
            Permission::WorkflowsRun,
            Permission::DefinitionsWrite,
            Permission::AuditRead,
            Permission::OtherTenants,
        ],
    ),
];

/// The claims of a Switchyard token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Who: a user or service id; recorded as `requested_by` / `sent_by`.
    pub sub: String,
    /// The only tenant the token may act for.
    pub tenant: String,
    /// Role names; unknown ones grant nothing.
    #[serde(default)]
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub tenant: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has(&self, permission: Permission) -> bool {
        ROLE_PERMISSIONS
            .iter()
            .filter(|(role, _)| self.roles.contains(role))
            .any(|(_, granted)| granted.contains(&permission))
    }
}

/// Checks bearer tokens. Built once from the configuration.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// Tokens whose signature and claims were checked, so a client that sends the same token
    /// on every request pays for the signature check (an RSA verification with RS256) once;
    /// expiry and not-before are still checked on every use.
    verified: Arc<Mutex<HashMap<String, Verified>>>,
    /// Seconds since the epoch, for the expiry checks of remembered tokens (a test's clock in
    /// tests; the signature check itself uses the system's).
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// A checked token's caller and validity window (seconds since the epoch).
#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
    nbf: Option<u64>,
}

/// Most verified tokens remembered; the cache starts over when full.
const VERIFIED_CAPACITY: usize = 10_000;

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

fn config_error(key: &str, message: impl Into<String>) -> Error {
    Error::Runtime(switchyard_runtime::Error::Config(vec![Problem {
        key: key.to_owned(),
        message: message.into(),
    }]))
}

impl Authenticator {
    /// Builds the checker; refuses HS256 without a secret and RS256 without a readable key.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, Error> {
        let (algorithm, key) = match settings.algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = settings.secret.as_ref().ok_or_else(|| {
                    config_error(
                        "SWITCHYARD_GATEWAY__AUTH__SECRET",
                        "not set; the gateway needs the HS256 key its tokens are signed with \
                         (at least 32 bytes, e.g. `openssl rand -hex 32`), or \
                         gateway.auth.algorithm = \"rs256\" with gateway.auth.public_key_file",
                    )
                })?;
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                )
            }
            JwtAlgorithm::Rs256 => {
                let Some(path) = &settings.public_key_file else {
                    return Err(config_error(
                        "gateway.auth.public_key_file",
                        "required when gateway.auth.algorithm is rs256",
                    ));
                };
                let pem = std::fs::read(path).map_err(|e| {
                    config_error(
                        "gateway.auth.public_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    config_error(
                        "gateway.auth.public_key_file",
                        format!("{} is not an RSA public key in PEM: {e}", path.display()),
                    )
                })?;
                (Algorithm::RS256, key)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Authenticator {
            key,
            validation,
            verified: Arc::default(),
            clock: Arc::new(jsonwebtoken::get_current_timestamp),
        })
    }

    /// The same checker reading the time from `clock`.
    #[cfg(test)]
    fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks an `Authorization` header value. The error's reason is a metric label; the
    /// token itself is never logged.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        let fail = |reason| Error::Unauthenticated { reason };
        let value = authorization.ok_or(fail("missing"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(fail("malformed"))?;
        let now = (self.clock)();
        let leeway = self.validation.leeway;
        if let Some(v) = self.cache().get(token) {
            if v.exp + leeway < now {
                return Err(fail("expired"));
            }
            if v.nbf.is_some_and(|nbf| nbf > now + leeway) {
                return Err(fail("not_yet_valid"));
            }
            return Ok(v.caller.clone());
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                fail(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not_yet_valid",
                    ErrorKind::InvalidSignature => "bad_signature",
                    ErrorKind::InvalidIssuer => "wrong_issuer",
                    ErrorKind::InvalidAudience => "wrong_audience",
                    ErrorKind::InvalidAlgorithm => "wrong_algorithm",
                    ErrorKind::MissingRequiredClaim(_)
                    | ErrorKind::InvalidClaimFormat(_)
                    | ErrorKind::Json(_) => "bad_claims",
                    _ => "malformed",
                })
            })?;
        let claims = data.claims;
        if switchyard_proto::subject::check_token(&claims.tenant).is_err() {
            return Err(fail("bad_claims"));
        }
        let caller = Caller {
            subject: claims.sub,
            tenant: claims.tenant,
            roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
        };
        let mut cache = self.cache();
        if cache.len() >= VERIFIED_CAPACITY {
            cache.clear();
        }
        cache.insert(
            token.to_owned(),
            Verified {
                caller: caller.clone(),
                exp: claims.exp,
                nbf: claims.nbf,
            },
        );
        Ok(caller)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verified>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Signs a development token with the configured HS256 secret (for `switchyard token` and
/// tests). RS256 tokens come from an identity provider, never from here.
pub fn issue_token(
    settings: &AuthSettings,
    tenant: &str,
    roles: &[Role],
    subject: &str,
    ttl: Duration,
) -> Result<String, Error> {
    if settings.algorithm == JwtAlgorithm::Rs256 {
        return Err(config_error(
            "gateway.auth.algorithm",
            "is rs256: development tokens are signed with HS256 only; get RS256 tokens from \
             your identity provider, or use gateway.auth.algorithm = \"hs256\" with a secret",
        ));
    }
    let secret = settings.secret.as_ref().ok_or_else(|| {
        config_error(
            "SWITCHYARD_GATEWAY__AUTH__SECRET",
            "not set; tokens are signed with the gateway's HS256 secret",
        )
    })?;
    switchyard_proto::subject::check_token(tenant)
        .map_err(|e| Error::field("tenant", e.to_string()))?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: subject.to_owned(),
        tenant: tenant.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
    };
    sign(&claims, secret.expose().as_bytes())
}

/// Signs any claims with an HS256 key.
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| Error::internal("signing a token", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_runtime::config::Secret;

    fn settings() -> AuthSettings {
        AuthSettings {
            secret: Some(Secret::new("s".repeat(32))),
            ..AuthSettings::default()
        }
    }

    #[test]
    fn roles_grant_what_the_table_says() {
        let caller = |roles: Vec<Role>| Caller {
            subject: "u".into(),
            tenant: "t".into(),
            roles,
        };
        let viewer = caller(vec![Role::Viewer]);
        assert!(viewer.has(Permission::WorkflowsRead));
        assert!(!viewer.has(Permission::WorkflowsRun));
        let operator = caller(vec![Role::Operator]);
        assert!(operator.has(Permission::WorkflowsRun));
        assert!(!operator.has(Permission::DefinitionsWrite));
        assert!(caller(vec![Role::Admin]).has(Permission::DefinitionsWrite));
        // Another tenant is the deployment's business, not a tenant admin's.
        assert!(!caller(vec![Role::Admin]).has(Permission::OtherTenants));
        assert!(caller(vec![Role::Platform]).has(Permission::OtherTenants));
        assert!(!caller(vec![]).has(Permission::WorkflowsRead));
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_it_expires() {
        let s = settings();
        let later = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let auth = Authenticator::from_settings(&s)
            .expect("builds")
            .with_clock({
                let later = later.clone();
                move || {
                    jsonwebtoken::get_current_timestamp()
                        + later.load(std::sync::atomic::Ordering::SeqCst)
                }
            });
        let now = jsonwebtoken::get_current_timestamp();
        // Expired 28 s ago: inside the 30 s leeway for two more seconds.
        let claims = Claims {
            sub: "ann".into(),
            tenant: "acme".into(),
            roles: vec!["viewer".into()],
            iss: s.issuer.clone(),
            aud: s.audience.clone(),
            exp: now - 28,
            nbf: None,
            iat: None,
        };
        let header = format!(
            "Bearer {}",
            sign(&claims, s.secret.as_ref().unwrap().expose().as_bytes()).unwrap()
        );
        auth.authenticate(Some(&header)).expect("valid");
        auth.authenticate(Some(&header)).expect("remembered");
        later.store(3, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            auth.authenticate(Some(&header)),
            Err(Error::Unauthenticated { reason: "expired" })
        ));
    }

    #[test]
    fn an_issued_token_authenticates_and_a_tampered_one_does_not() {
        let s = settings();
        let auth = Authenticator::from_settings(&s).expect("builds");
        let token = issue_token(
            &s,
            "acme",
            &[Role::Operator],
            "ann",
            Duration::from_secs(60),
        )
        .expect("signs");
        let caller = auth
            .authenticate(Some(&format!("Bearer {token}")))
            .expect("valid");
        assert_eq!(
            (caller.tenant.as_str(), caller.subject.as_str()),
            ("acme", "ann")
        );
        assert_eq!(caller.roles, vec![Role::Operator]);
        let other = AuthSettings {
            secret: Some(Secret::new("x".repeat(32))),
            ..AuthSettings::default()
        };
        let forged = issue_token(
            &other,
            "acme",
            &[Role::Admin],
            "eve",
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {forged}"))),
            Err(Error::Unauthenticated {
                reason: "bad_signature"
            })
        ));
        assert!(matches!(
            auth.authenticate(Some("Basic abc")),
            Err(Error::Unauthenticated {
                reason: "malformed"
            })
        ));
    }

    #[test]
    fn no_secret_is_a_config_error_naming_the_variable() {
        let err = Authenticator::from_settings(&AuthSettings::default()).unwrap_err();
        assert!(
            err.to_string().contains("SWITCHYARD_GATEWAY__AUTH__SECRET"),
            "{err}"
        );
        let rs = AuthSettings {
            algorithm: JwtAlgorithm::Rs256,
            ..settings()
        };
        let err =
            issue_token(&rs, "acme", &[Role::Admin], "a", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("rs256"), "{err}");
    }

    /// Test-only RSA keys (`tests/fixtures`), made with `openssl genpkey` for these tests.
    const RS256_PRIVATE: &str = include_str!("../tests/fixtures/rs256-test-private.pem");
    const RS256_PUBLIC: &str = include_str!("../tests/fixtures/rs256-test-public.pem");
    const RS256_OTHER_PRIVATE: &str = include_str!("../tests/fixtures/rs256-other-private.pem");

    fn rs256() -> (Authenticator, AuthSettings, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("public.pem");
        std::fs::write(&public, RS256_PUBLIC).unwrap();
        let s = AuthSettings {
            algorithm: JwtAlgorithm::Rs256,
            public_key_file: Some(public),
            ..AuthSettings::default()
        };
        (Authenticator::from_settings(&s).expect("builds"), s, dir)
    }

    fn claims_for(s: &AuthSettings) -> Claims {
        Claims {
            sub: "idp-user".into(),
            tenant: "acme".into(),
            roles: vec!["operator".into()],
            iss: s.issuer.clone(),
            aud: s.audience.clone(),
            exp: jsonwebtoken::get_current_timestamp() + 600,
            nbf: None,
            iat: None,
        }
    }

    fn bearer(header: Header, claims: &Claims, key: &EncodingKey) -> String {
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, claims, key).unwrap()
        )
    }

    #[test]
    fn an_rs256_token_from_the_identity_provider_authenticates() {
        let (auth, s, _dir) = rs256();
        let key = EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap();
        let caller = auth
            .authenticate(Some(&bearer(
                Header::new(Algorithm::RS256),
                &claims_for(&s),
                &key,
            )))
            .expect("valid");
        assert_eq!(
            (caller.tenant.as_str(), caller.subject.as_str()),
            ("acme", "idp-user")
        );
        assert_eq!(caller.roles, vec![Role::Operator]);
    }

    #[test]
    fn an_rs256_token_signed_with_another_key_is_refused() {
        let (auth, s, _dir) = rs256();
        let other = EncodingKey::from_rsa_pem(RS256_OTHER_PRIVATE.as_bytes()).unwrap();
        assert!(matches!(
            auth.authenticate(Some(&bearer(
                Header::new(Algorithm::RS256),
                &claims_for(&s),
                &other
            ))),
            Err(Error::Unauthenticated {
                reason: "bad_signature"
            })
        ));
    }

    /// The classic confusion: an HS256 token whose HMAC key is the RSA public key (which an
    /// attacker has) must not pass a checker configured for RS256.
    #[test]
    fn an_hs256_token_keyed_with_the_public_key_is_refused_by_an_rs256_checker() {
        let (auth, s, _dir) = rs256();
        let forged = bearer(
            Header::new(Algorithm::HS256),
            &claims_for(&s),
            &EncodingKey::from_secret(RS256_PUBLIC.as_bytes()),
        );
        assert!(matches!(
            auth.authenticate(Some(&forged)),
            Err(Error::Unauthenticated {
                reason: "wrong_algorithm"
            })
        ));
    }
}
