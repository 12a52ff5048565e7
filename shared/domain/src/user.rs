use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Email, Invalid, UserId, parse_text};
use crate::validation::FieldErrors;

/// What a user may do. Every account starts as a customer; admins are promoted out of band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

/// A password as typed by its owner. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    /// Bounded so that hashing cost cannot be driven up by the caller.
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let count = raw.chars().count();
        if count < Self::MIN_CHARS {
            return Err(Invalid::new(format!("must be at least {} characters", Self::MIN_CHARS)));
        }
        if count > Self::MAX_CHARS {
            return Err(Invalid::new(format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A phone number in E.164 form (`+` and 7 to 15 digits), so SMS providers accept it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        let valid =
            (7..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0');
        if valid {
            Ok(Self(compact))
        } else {
            Err(Invalid::new(
                "must be an international phone number such as +14155550123",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}

impl From<Phone> for String {
    fn from(phone: Phone) -> String {
        phone.0
    }
}

/// A user as the API shows it. The password hash is storage's business and never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: String,
    pub phone: Option<Phone>,
    pub role: Role,
    pub created_at: String,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub name: String,
    pub phone: Option<Phone>,
}

impl NewUser {
    pub const NAME_MAX_CHARS: usize = 100;

    /// Checks every field and reports all problems at once.
    pub fn parse(email: &str, password: &str, name: &str, phone: Option<&str>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let email = errors.check("email", Email::parse(email));
        let password = errors.check("password", Password::parse(password));
        let name = errors.check("name", parse_text(name, 1, Self::NAME_MAX_CHARS));
        let phone = match phone {
            Some(raw) => errors.check("phone", Phone::parse(raw)).map(Some),
            None => Some(None),
        };
        errors.finish(|| {
            Some(Self {
                email: email?,
                password: password?,
                name: name?,
                phone: phone?,
            })
        })
    }

    /// The user this registration creates, as a customer.
    pub fn into_user(self, id: UserId, created_at: String) -> (User, Password) {
        let user = User {
            id,
            email: self.email,
            name: self.name,
            phone: self.phone,
            role: Role::Customer,
            created_at,
        };
        (user, self.password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_registration_parses() {
        let new_user = NewUser::parse("Ada@Example.com", "correct horse", " Ada ", Some("+44 20 7946 0958")).unwrap();
        assert_eq!(new_user.email.as_str(), "ada@example.com");
        assert_eq!(new_user.name, "Ada");
        assert_eq!(new_user.phone.unwrap().as_str(), "+442079460958");
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let errors = NewUser::parse("nope", "short", "", Some("12")).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "password", "name", "phone"]);
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let password = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn overlong_passwords_are_refused() {
        assert!(Password::parse(&"x".repeat(Password::MAX_CHARS + 1)).is_err());
    }
}
