//! Ordered allow/deny rules over the request and the verified claims.
//!
//! Evaluation, first applicable rule wins (README "Rules"):
//! - a rule is considered when its `match` holds;
//! - its requirement: `anonymous` needs nothing; `any` (optionally narrowed to some
//!   `providers`) needs a verified token from one of them. An **allow** rule whose
//!   requirement is unmet ends evaluation with 401 (this route needs a token); a
//!   **deny** rule whose requirement is unmet is skipped (it targets authenticated
//!   callers only);
//! - its claim conditions must all hold on the verified claims (no token: they do not
//!   hold), otherwise the rule is skipped;
//! - a `shadow` rule is only counted: evaluation continues as if it were absent.
//!
//! No rule applies → the default action (deny: 403, or 401 when the token was invalid).

use serde::Deserialize;
use serde_json::{Map, Value};

use meshward_filter_common::matcher::RequestMatcher;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleAction {
    Allow,
    #[default]
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A verified token from one of these providers (empty: any provider).
    Authenticated { providers: Vec<usize> },
    /// No token needed; a valid one still yields identity headers.
    Anonymous,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    /// The claim equals this value (strings, numbers, booleans compared as JSON).
    Equals(Value),
    /// The claim (or, for an array claim, one of its elements) is one of these values.
    In(Vec<Value>),
    /// An array claim has this element, or a space-separated string claim (`scope`) has
    /// this word.
    Contains(String),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimCondition {
    /// A top-level claim name, or a dotted path into nested objects
    /// (`realm_access.roles`); a top-level name containing dots (Auth0's
    /// `https://example.com/roles`) is looked up as written first.
    pub claim: String,
    pub test: ClaimTest,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: RuleAction,
    pub matcher: RequestMatcher,
    pub requirement: Requirement,
    pub claims: Vec<ClaimCondition>,
    pub shadow: bool,
}

/// Finds a claim by name or dotted path.
pub fn lookup<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

impl ClaimCondition {
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        let value = lookup(claims, &self.claim).filter(|v| !v.is_null());
        match (&self.test, value) {
            (ClaimTest::Exists(expected), value) => value.is_some() == *expected,
            (_, None) => false,
            (ClaimTest::Equals(expected), Some(value)) => value == expected,
            (ClaimTest::In(allowed), Some(Value::Array(items))) => {
                items.iter().any(|item| allowed.contains(item))
            }
            (ClaimTest::In(allowed), Some(value)) => allowed.contains(value),
            (ClaimTest::Contains(wanted), Some(Value::Array(items))) => items
                .iter()
                .any(|item| item.as_str() == Some(wanted.as_str())),
            (ClaimTest::Contains(wanted), Some(Value::String(words))) => {
                words.split_ascii_whitespace().any(|word| word == wanted)
            }
            (ClaimTest::Contains(_), Some(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        json!({
            "sub": "alice",
            "scope": "orders:read orders:write",
            "roles": ["admin", "ops"],
            "role": "ops",
            "level": 3,
            "email_verified": true,
            "realm_access": {"roles": ["manager"]},
            "https://example.com/tenant": "acme",
            "gone": null
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn condition(claim: &str, test: ClaimTest) -> ClaimCondition {
        ClaimCondition {
            claim: claim.into(),
            test,
        }
    }

    #[test]
    fn contains_works_on_space_separated_strings_and_arrays() {
        let c = claims();
        assert!(condition("scope", ClaimTest::Contains("orders:write".into())).holds(&c));
        assert!(!condition("scope", ClaimTest::Contains("orders".into())).holds(&c));
        assert!(condition("roles", ClaimTest::Contains("ops".into())).holds(&c));
        assert!(!condition("roles", ClaimTest::Contains("root".into())).holds(&c));
        assert!(!condition("level", ClaimTest::Contains("3".into())).holds(&c));
        assert!(!condition("missing", ClaimTest::Contains("x".into())).holds(&c));
    }

    #[test]
    fn in_matches_a_scalar_or_any_array_element() {
        let c = claims();
        let staff = ClaimTest::In(vec![json!("admin"), json!("ops")]);
        assert!(condition("role", staff.clone()).holds(&c));
        assert!(condition("roles", staff.clone()).holds(&c));
        assert!(!condition("sub", staff).holds(&c));
        assert!(condition("level", ClaimTest::In(vec![json!(2), json!(3)])).holds(&c));
    }

    #[test]
    fn equals_compares_types_exactly() {
        let c = claims();
        assert!(condition("email_verified", ClaimTest::Equals(json!(true))).holds(&c));
        assert!(!condition("email_verified", ClaimTest::Equals(json!("true"))).holds(&c));
        assert!(condition("level", ClaimTest::Equals(json!(3))).holds(&c));
        assert!(!condition("level", ClaimTest::Equals(json!("3"))).holds(&c));
    }

    #[test]
    fn exists_treats_null_as_absent() {
        let c = claims();
        assert!(condition("sub", ClaimTest::Exists(true)).holds(&c));
        assert!(condition("gone", ClaimTest::Exists(false)).holds(&c));
        assert!(condition("nothing", ClaimTest::Exists(false)).holds(&c));
        assert!(!condition("nothing", ClaimTest::Exists(true)).holds(&c));
    }

    #[test]
    fn nested_paths_and_dotted_names() {
        let c = claims();
        assert!(condition("realm_access.roles", ClaimTest::Contains("manager".into())).holds(&c));
        assert!(condition(
            "https://example.com/tenant",
            ClaimTest::Equals(json!("acme"))
        )
        .holds(&c));
        assert!(!condition("realm_access.missing", ClaimTest::Exists(true)).holds(&c));
        assert!(!condition("sub.deeper", ClaimTest::Exists(true)).holds(&c));
    }
}
