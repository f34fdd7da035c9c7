//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), parsed once and matched many
//! times.
//!
//! Semantics are the API server's: all requirements are ANDed; an empty selector matches
//! everything; `NotIn` and `DoesNotExist` match objects lacking the key.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::{Ctx, PolicyError};

/// One parsed requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A validated label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Parses a K8s selector.
    ///
    /// Errors: `InvalidSelector` naming `ctx`'s object and field for an unknown operator, `In` /
    /// `NotIn` without values, `Exists` / `DoesNotExist` with values, or an empty key.
    pub(crate) fn parse(sel: &LabelSelector, ctx: &Ctx<'_>) -> Result<Selector, PolicyError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            if k.is_empty() {
                return Err(ctx.at(".matchLabels").selector("empty label key"));
            }
            requirements.push(Requirement::In(k.clone(), BTreeSet::from([v.clone()])));
        }
        for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
            let ctx = ctx.at(format!(".matchExpressions[{i}]"));
            if expr.key.is_empty() {
                return Err(ctx.selector("empty key"));
            }
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let req = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ctx.selector(format!(
                        "operator {} needs at least one value",
                        expr.operator
                    )));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ctx.selector(format!("operator {} takes no values", expr.operator)));
                }
                "In" => Requirement::In(expr.key.clone(), values),
                "NotIn" => Requirement::NotIn(expr.key.clone(), values),
                "Exists" => Requirement::Exists(expr.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(expr.key.clone()),
                other => {
                    return Err(ctx.selector(format!(
                        "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                    )));
                }
            };
            requirements.push(req);
        }
        Ok(Selector { requirements })
    }

    /// Parses a selector outside a policy (e.g. an Egress's `appliedTo`); errors name `object`
    /// and `field` as [`Selector::parse`]'s do.
    pub fn from_k8s(
        sel: &LabelSelector,
        object: &str,
        field: &str,
    ) -> Result<Selector, PolicyError> {
        Selector::parse(sel, &Ctx::new(object, field))
    }

    /// Parses an optional selector; `None` → `None` (callers decide what absence means).
    pub(crate) fn parse_opt(
        sel: Option<&LabelSelector>,
        ctx: &Ctx<'_>,
    ) -> Result<Option<Selector>, PolicyError> {
        sel.map(|s| Selector::parse(s, ctx)).transpose()
    }

    /// True if every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for `{}`.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    fn sel(exprs: Vec<LabelSelectorRequirement>) -> Result<Selector, PolicyError> {
        let s = LabelSelector {
            match_expressions: Some(exprs),
            match_labels: None,
        };
        Selector::parse(&s, &Ctx::new("obj", "spec.podSelector"))
    }

    #[test]
    fn operators() -> Result<(), PolicyError> {
        let web = labels(&[("app", "web"), ("tier", "fe")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);

        let s = sel(vec![expr("app", "In", &["web", "api"])])?;
        assert!(s.matches(&web) && !s.matches(&db) && !s.matches(&none));

        let s = sel(vec![expr("app", "NotIn", &["web"])])?;
        assert!(!s.matches(&web) && s.matches(&db) && s.matches(&none));

        let s = sel(vec![expr("tier", "Exists", &[])])?;
        assert!(s.matches(&web) && !s.matches(&db));

        let s = sel(vec![expr("tier", "DoesNotExist", &[])])?;
        assert!(!s.matches(&web) && s.matches(&db) && s.matches(&none));

        // ANDed with matchLabels.
        let s = Selector::parse(
            &LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                match_expressions: Some(vec![expr("tier", "In", &["be"])]),
            },
            &Ctx::new("o", "f"),
        )?;
        assert!(!s.matches(&web));
        Ok(())
    }

    #[test]
    fn empty_selector_matches_everything() -> Result<(), PolicyError> {
        let s = Selector::parse(&LabelSelector::default(), &Ctx::new("o", "f"))?;
        assert!(s.is_everything());
        assert!(s.matches(&labels(&[])));
        Ok(())
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let err = sel(vec![expr("app", "Like", &["x"])]).err();
        match err {
            Some(PolicyError::InvalidSelector { object, field, .. }) => {
                assert_eq!(object, "obj");
                assert_eq!(field, "spec.podSelector.matchExpressions[0]");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(sel(vec![expr("app", "In", &[])]).is_err());
        assert!(sel(vec![expr("app", "Exists", &["x"])]).is_err());
    }
}
