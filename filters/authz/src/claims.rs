//! Registered-claim checks after the signature holds: `exp`/`nbf` with the provider's
//! clock skew, `iss`, `aud` (string or array; one configured audience must be present
//! when any are configured), and the provider's required claims.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Missing(String),
    /// A registered claim has the wrong type (e.g. `exp` as a string).
    Malformed(&'static str),
}

pub struct ClaimPolicy<'p> {
    pub issuer: &'p str,
    pub audiences: &'p [String],
    pub skew_secs: u64,
    pub required: &'p [String],
}

/// Checks the payload at `now_secs`; returns `exp` (whole seconds, rounded down) when
/// present, which bounds how long a verification may be cached.
pub fn validate(
    payload: &Map<String, Value>,
    policy: &ClaimPolicy<'_>,
    now_secs: u64,
) -> Result<Option<u64>, ClaimError> {
    let exp = numeric_date(payload, "exp")?;
    if let Some(exp) = exp {
        if now_secs >= exp.saturating_add(policy.skew_secs) {
            return Err(ClaimError::Expired);
        }
    }
    if let Some(nbf) = numeric_date(payload, "nbf")? {
        if now_secs.saturating_add(policy.skew_secs) < nbf {
            return Err(ClaimError::NotYetValid);
        }
    }
    if payload.get("iss").and_then(Value::as_str) != Some(policy.issuer) {
        return Err(ClaimError::Issuer);
    }
    if !policy.audiences.is_empty() {
        let accepted = |aud: &str| policy.audiences.iter().any(|a| a == aud);
        let ok = match payload.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            _ => false,
        };
        if !ok {
            return Err(ClaimError::Audience);
        }
    }
    for name in policy.required {
        if payload.get(name).is_none_or(Value::is_null) {
            return Err(ClaimError::Missing(name.clone()));
        }
    }
    Ok(exp)
}

/// RFC 7519 NumericDate: a JSON number of seconds (fractions allowed, rounded down;
/// negative treated as 0).
fn numeric_date(
    payload: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, ClaimError> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let seconds = n
                .as_u64()
                .or_else(|| n.as_i64().map(|s| u64::try_from(s).unwrap_or(0)))
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(float_seconds));
            seconds.map(Some).ok_or(ClaimError::Malformed(name))
        }
        Some(_) => Err(ClaimError::Malformed(name)),
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn float_seconds(value: f64) -> u64 {
    // `as` saturates: negative → 0, beyond u64 → u64::MAX.
    value.floor() as u64
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn payload(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn policy<'p>(audiences: &'p [String], required: &'p [String]) -> ClaimPolicy<'p> {
        ClaimPolicy {
            issuer: "https://issuer.example",
            audiences,
            skew_secs: 60,
            required,
        }
    }

    #[test]
    fn accepts_a_current_token_and_returns_exp() {
        let p = payload(json!({"iss": "https://issuer.example", "exp": NOW + 10, "nbf": NOW - 10}));
        assert_eq!(validate(&p, &policy(&[], &[]), NOW), Ok(Some(NOW + 10)));
    }

    #[test]
    fn expiry_and_not_before_honour_the_skew() {
        let pol = policy(&[], &[]);
        let at = |exp: u64| payload(json!({"iss": "https://issuer.example", "exp": exp}));
        assert!(validate(&at(NOW - 59), &pol, NOW).is_ok());
        assert_eq!(validate(&at(NOW - 60), &pol, NOW), Err(ClaimError::Expired));
        let nbf = |nbf: u64| payload(json!({"iss": "https://issuer.example", "nbf": nbf}));
        assert!(validate(&nbf(NOW + 60), &pol, NOW).is_ok());
        assert_eq!(
            validate(&nbf(NOW + 61), &pol, NOW),
            Err(ClaimError::NotYetValid)
        );
        let fractional =
            payload(json!({"iss": "https://issuer.example", "exp": (NOW - 61) as f64 + 0.9}));
        assert_eq!(validate(&fractional, &pol, NOW), Err(ClaimError::Expired));
    }

    #[test]
    fn wrong_types_are_malformed_not_ignored() {
        let p = payload(json!({"iss": "https://issuer.example", "exp": "tomorrow"}));
        assert_eq!(
            validate(&p, &policy(&[], &[]), NOW),
            Err(ClaimError::Malformed("exp"))
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        for iss in [
            json!("https://issuer.example/"),
            json!(null),
            json!(["https://issuer.example"]),
        ] {
            let p = payload(json!({"iss": iss}));
            assert_eq!(
                validate(&p, &policy(&[], &[]), NOW),
                Err(ClaimError::Issuer),
                "{iss}"
            );
        }
    }

    #[test]
    fn audience_string_or_array_must_contain_a_configured_one() {
        let auds = ["api://orders".to_owned(), "api://billing".to_owned()];
        let pol = policy(&auds, &[]);
        let with = |aud: Value| payload(json!({"iss": "https://issuer.example", "aud": aud}));
        assert!(validate(&with(json!("api://billing")), &pol, NOW).is_ok());
        assert!(validate(&with(json!(["x", "api://orders"])), &pol, NOW).is_ok());
        assert_eq!(
            validate(&with(json!("api://other")), &pol, NOW),
            Err(ClaimError::Audience)
        );
        assert_eq!(
            validate(&with(json!([])), &pol, NOW),
            Err(ClaimError::Audience)
        );
        let none = payload(json!({"iss": "https://issuer.example"}));
        assert_eq!(validate(&none, &pol, NOW), Err(ClaimError::Audience));
    }

    #[test]
    fn required_claims_must_be_present_and_not_null() {
        let required = ["sub".to_owned()];
        let pol = policy(&[], &required);
        let p = payload(json!({"iss": "https://issuer.example", "sub": null}));
        assert_eq!(
            validate(&p, &pol, NOW),
            Err(ClaimError::Missing("sub".into()))
        );
    }
}
