//! Access tokens (HS256 JWTs signed with the deployment's secret) and password hashing (Argon2id).

use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use domain::{Password, Role, UserId, unix_now};

const ISSUER: &str = "shop-api";
const AUDIENCE: &str = "shop-api";

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub role: Role,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Owners see their own objects and admins see all; everyone else is told it does not exist.
    pub fn may_access(&self, owner: &UserId) -> bool {
        self.is_admin() || &self.user_id == owner
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iat: u64,
    exp: u64,
    iss: String,
    aud: String,
}

/// A freshly issued access token.
#[derive(Debug, Clone, Serialize)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// Issues and verifies access tokens. Built once at init from the signing secret.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl TokenService {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn issue(&self, user_id: &UserId, role: Role) -> Result<AccessToken, ApiError> {
        self.issue_at(user_id, role, unix_now())
    }

    /// Issues a token as if it were `issued_at` (seconds since the epoch); tests use it for expiry.
    pub fn issue_at(&self, user_id: &UserId, role: Role, issued_at: u64) -> Result<AccessToken, ApiError> {
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: issued_at,
            exp: issued_at + self.ttl_secs,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(AccessToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: self.ttl_secs,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|error| {
            tracing::info!(reason = %error, "token refused");
            match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::Unauthorized("The token has expired."),
                _ => ApiError::Unauthorized("The token is invalid."),
            }
        })?;
        let user_id = UserId::parse(&data.claims.sub).map_err(|_| ApiError::Unauthorized("The token is invalid."))?;
        Ok(Identity {
            user_id,
            role: data.claims.role,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Argon2id password hashing, run on the blocking pool so the async threads keep serving.
#[derive(Clone, Default)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
}

impl PasswordHasher {
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let argon2 = Arc::clone(&self.argon2);
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| HashError(error.to_string().into()))
        })
        .await
        .map_err(|error| HashError(Box::new(error)))?
    }

    /// Checks `password` against `stored_hash`; with no stored hash (unknown account) it still spends
    /// the same work on a decoy, so response time does not reveal which emails exist.
    pub async fn verify(&self, password: &str, stored_hash: Option<String>) -> Result<bool, HashError> {
        let argon2 = Arc::clone(&self.argon2);
        let password = password.to_owned();
        let known = stored_hash.is_some();
        tokio::task::spawn_blocking(move || {
            let hash = match stored_hash {
                Some(hash) => hash,
                None => decoy_hash(&argon2)?.to_owned(),
            };
            let parsed = PasswordHash::new(&hash).map_err(|error| HashError(error.to_string().into()))?;
            Ok(argon2.verify_password(password.as_bytes(), &parsed).is_ok() && known)
        })
        .await
        .map_err(|error| HashError(Box::new(error)))?
    }
}

fn decoy_hash(argon2: &Argon2<'static>) -> Result<&'static str, HashError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return Ok(hash);
    }
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2
        .hash_password(b"decoy password for unknown accounts", &salt)
        .map_err(|error| HashError(error.to_string().into()))?
        .to_string();
    Ok(DECOY.get_or_init(|| hash))
}

/// The token of an `Authorization: Bearer <token>` header: 401 when it is missing or malformed.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(ApiError::Unauthorized("A bearer token is required."))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized(
            "The Authorization header must be 'Bearer <token>'.",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(b"test-secret-of-reasonable-length-0123456789", 3600)
    }

    #[test]
    fn an_issued_token_verifies_to_its_user_and_role() {
        let user_id = UserId::generate();
        let token = service().issue(&user_id, Role::Admin).unwrap();
        let identity = service().verify(&token.access_token).unwrap();
        assert_eq!(
            identity,
            Identity {
                user_id,
                role: Role::Admin
            }
        );
        assert_eq!(token.token_type, "Bearer");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = service()
            .issue_at(&UserId::generate(), Role::Customer, unix_now() - 7200)
            .unwrap();
        assert!(matches!(
            service().verify(&token.access_token),
            Err(ApiError::Unauthorized("The token has expired."))
        ));
    }

    #[test]
    fn tokens_signed_with_another_key_are_refused() {
        let other = TokenService::new(b"another-secret-another-secret-another", 3600);
        let token = other.issue(&UserId::generate(), Role::Admin).unwrap();
        assert!(service().verify(&token.access_token).is_err());
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let now = unix_now();
        let claims = b64.encode(format!(
            r#"{{"sub":"{}","role":"admin","iat":{now},"exp":{},"iss":"shop-api","aud":"shop-api"}}"#,
            UserId::generate(),
            now + 60
        ));
        assert!(service().verify(&format!("{header}.{claims}.")).is_err());
    }

    #[test]
    fn tampered_claims_are_refused() {
        let token = service()
            .issue(&UserId::generate(), Role::Customer)
            .unwrap()
            .access_token;
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            claims["role"] = "admin".into();
            b64.encode(claims.to_string())
        };
        parts[1] = &forged;
        assert!(service().verify(&parts.join(".")).is_err());
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hasher = PasswordHasher::default();
        let password = Password::parse("correct horse battery").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(!hash.contains("correct horse"));
        assert!(
            hasher
                .verify("correct horse battery", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong horse battery", Some(hash)).await.unwrap());
        assert!(!hasher.verify("correct horse battery", None).await.unwrap());
    }
}
