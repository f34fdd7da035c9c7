//! Errors for invalid input objects.
//!
//! Every variant names the object (`object`, e.g. `K8sNetworkPolicy:web/allow-api`) and the field
//! path inside it (`field`, e.g. `spec.ingress[0].from[1].ipBlock.cidr`) so an operator can find
//! and fix the YAML. The compiler skips an invalid policy and reports the error; it never panics
//! on input.

use thiserror::Error;

/// Why an input object could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// A CIDR (ipBlock.cidr or an except entry) does not parse, or an except is outside its cidr.
    #[error("{object}: {field}: invalid CIDR {value:?}: {reason}")]
    InvalidCidr {
        object: String,
        field: String,
        value: String,
        reason: String,
    },
    /// A port, endPort or protocol is out of range or inconsistent.
    #[error("{object}: {field}: invalid port {value:?}: {reason}")]
    InvalidPort {
        object: String,
        field: String,
        value: String,
        reason: String,
    },
    /// A label selector uses an unknown operator or a malformed requirement.
    #[error("{object}: {field}: invalid label selector: {reason}")]
    InvalidSelector {
        object: String,
        field: String,
        reason: String,
    },
    /// Any other field with a value the compiler cannot use (unknown action, tier, policyType …).
    #[error("{object}: {field}: invalid value {value:?}: {reason}")]
    InvalidField {
        object: String,
        field: String,
        value: String,
        reason: String,
    },
    /// A required field is missing (e.g. metadata.name, rule-level appliedTo).
    #[error("{object}: {field}: missing required field")]
    MissingField { object: String, field: String },
    /// The OpenFlow priority space of a table is exhausted by the Antrea-native rules.
    #[error(
        "{object}: {field}: no OpenFlow priority left in table {table}; reduce the number of distinct tier/priority/rule combinations"
    )]
    PriorityExhausted {
        object: String,
        field: String,
        table: String,
    },
}

impl PolicyError {
    /// The object the error is about, in `"<Type>:<ns>/<name>"` form.
    pub fn object(&self) -> &str {
        match self {
            PolicyError::InvalidCidr { object, .. }
            | PolicyError::InvalidPort { object, .. }
            | PolicyError::InvalidSelector { object, .. }
            | PolicyError::InvalidField { object, .. }
            | PolicyError::MissingField { object, .. }
            | PolicyError::PriorityExhausted { object, .. } => object,
        }
    }

    /// The field path inside the object.
    pub fn field(&self) -> &str {
        match self {
            PolicyError::InvalidCidr { field, .. }
            | PolicyError::InvalidPort { field, .. }
            | PolicyError::InvalidSelector { field, .. }
            | PolicyError::InvalidField { field, .. }
            | PolicyError::MissingField { field, .. }
            | PolicyError::PriorityExhausted { field, .. } => field,
        }
    }
}

/// Where in which object we are: builds errors with the object name and a field path.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    pub object: &'a str,
    pub field: String,
}

impl<'a> Ctx<'a> {
    pub fn new(object: &'a str, field: impl Into<String>) -> Self {
        Ctx {
            object,
            field: field.into(),
        }
    }

    /// A child path: `spec` + `.ingress[0]` etc.
    pub fn at(&self, suffix: impl AsRef<str>) -> Ctx<'a> {
        let suffix = suffix.as_ref();
        let field = if self.field.is_empty() {
            suffix.trim_start_matches('.').to_string()
        } else {
            format!("{}{}", self.field, suffix)
        };
        Ctx {
            object: self.object,
            field,
        }
    }

    pub fn cidr(&self, value: &str, reason: impl Into<String>) -> PolicyError {
        PolicyError::InvalidCidr {
            object: self.object.to_string(),
            field: self.field.clone(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn port(&self, value: impl ToString, reason: impl Into<String>) -> PolicyError {
        PolicyError::InvalidPort {
            object: self.object.to_string(),
            field: self.field.clone(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn selector(&self, reason: impl Into<String>) -> PolicyError {
        PolicyError::InvalidSelector {
            object: self.object.to_string(),
            field: self.field.clone(),
            reason: reason.into(),
        }
    }

    pub fn invalid(&self, value: impl ToString, reason: impl Into<String>) -> PolicyError {
        PolicyError::InvalidField {
            object: self.object.to_string(),
            field: self.field.clone(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn missing(&self) -> PolicyError {
        PolicyError::MissingField {
            object: self.object.to_string(),
            field: self.field.clone(),
        }
    }
}
