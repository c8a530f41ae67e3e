//! The body of every error the native API answers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `{"error": "...", "field": "..."}`: what went wrong, and the request field it blames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message, fit to show a user.
    pub error: String,
    /// The offending field (`port`, `check.ttl`, `cas`, ...), when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl fmt::Display for ErrorBody {
    /// `message`, or `message (field: f)` when a (non-empty) field is blamed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_deref().filter(|field| !field.is_empty()) {
            Some(field) => write!(f, "{} (field: {field})", self.error),
            None => f.write_str(&self.error),
        }
    }
}
