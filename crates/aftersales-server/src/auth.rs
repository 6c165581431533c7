//! Bearer tokens with scopes, compared in constant time, never logged.

use std::fmt;

use aftersales_adapter::constant_time_eq;
use axum::http::{HeaderMap, StatusCode, header};

use crate::problem::{Problem, codes};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read instances, history, workflows.
    Read,
    /// Submit after-sales requests (start instances).
    Submit,
    /// Send signals and events, cancel.
    Operate,
    /// Everything.
    Admin,
}

impl Scope {
    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "read" => Scope::Read,
            "submit" => Scope::Submit,
            "operate" => Scope::Operate,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Clone)]
pub struct Token {
    /// A name for logs (never the secret).
    pub name: String,
    secret: Vec<u8>,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Token {
    /// A token; `secret` comes from the environment.
    pub fn new(name: impl Into<String>, secret: impl Into<String>, scopes: Vec<Scope>) -> Token {
        Token {
            name: name.into(),
            secret: secret.into().into_bytes(),
            scopes,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The configured tokens. With none configured, every request is allowed (a local
/// development daemon); the daemon warns about it at start.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Token>,
}

impl Auth {
    /// Auth over these tokens.
    pub fn new(tokens: Vec<Token>) -> Auth {
        Auth { tokens }
    }

    /// True when no token is configured.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks the request's bearer token for `scope`; returns the token's name.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<String, Problem> {
        if self.is_open() {
            return Ok("anonymous".to_owned());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    codes::UNAUTHENTICATED,
                    "missing `Authorization: Bearer <token>`",
                )
            })?;
        // Compare against every token so timing does not tell which one nearly matched.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if constant_time_eq(t.secret.as_slice(), presented.as_bytes()) && found.is_none() {
                found = Some(t);
            }
        }
        let Some(token) = found else {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHENTICATED,
                "unknown token",
            ));
        };
        if token.scopes.contains(&Scope::Admin) || token.scopes.contains(&scope) {
            Ok(token.name.clone())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                format!(
                    "token `{}` lacks the `{}` scope",
                    token.name,
                    scope.as_str()
                ),
            ))
        }
    }
}
