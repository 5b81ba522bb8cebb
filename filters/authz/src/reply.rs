//! Local replies: 401 with an RFC 6750 `WWW-Authenticate: Bearer` challenge, 403 for a
//! rule denial, 503 when keys cannot be had and `failureMode` is `deny`; each with an
//! RFC 9457 problem+json body. Descriptions are fixed texts: token contents are never
//! echoed.

use meshward_filter_common::problem::{Problem, CONTENT_TYPE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn problem(status: u16, slug: &str, title: &str, detail: &str) -> String {
    Problem {
        type_uri: format!("https://meshward.dev/problems/{slug}"),
        title: title.to_owned(),
        status,
        detail: detail.to_owned(),
    }
    .to_json()
}

/// The 401 reply. RFC 6750 §3.1: a request with no credentials gets the bare
/// challenge (no error code); an invalid token gets `error="invalid_token"` and a description.
pub fn unauthorized(realm: &str, invalid_token: Option<&str>) -> Reply {
    let (challenge, detail) = match invalid_token {
        None => (
            format!("Bearer realm=\"{realm}\""),
            "a bearer token is required",
        ),
        Some(description) => (
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{description}\""
            ),
            description,
        ),
    };
    Reply {
        status: 401,
        headers: vec![
            ("content-type".into(), CONTENT_TYPE.into()),
            ("www-authenticate".into(), challenge),
        ],
        body: problem(401, "unauthorized", "Unauthorized", detail),
    }
}

/// The 400 reply for a malformed request (RFC 6750 §3.1 `invalid_request`), such as
/// one carrying several tokens.
pub fn invalid_request(realm: &str, description: &str) -> Reply {
    Reply {
        status: 400,
        headers: vec![
            ("content-type".into(), CONTENT_TYPE.into()),
            (
                "www-authenticate".into(),
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{description}\""
                ),
            ),
        ],
        body: problem(400, "invalid-request", "Bad Request", description),
    }
}

pub fn forbidden() -> Reply {
    Reply {
        status: 403,
        headers: vec![("content-type".into(), CONTENT_TYPE.into())],
        body: problem(
            403,
            "forbidden",
            "Forbidden",
            "the authorization policy does not allow this request",
        ),
    }
}

/// The 503 reply; `retry_after_secs` is when the next key fetch may succeed.
pub fn keys_unavailable(retry_after_secs: u64) -> Reply {
    Reply {
        status: 503,
        headers: vec![
            ("content-type".into(), CONTENT_TYPE.into()),
            ("retry-after".into(), retry_after_secs.max(1).to_string()),
        ],
        body: problem(
            503,
            "authentication-unavailable",
            "Service Unavailable",
            "the token cannot be verified now: the issuer's signing keys are unavailable",
        ),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = unauthorized("orders", None);
        assert_eq!(missing.headers[1].1, "Bearer realm=\"orders\"");
        let invalid = unauthorized("orders", Some("the token has expired"));
        assert_eq!(
            invalid.headers[1].1,
            "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let body: serde_json::Value = serde_json::from_str(&invalid.body).unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["detail"], "the token has expired");
    }

    #[test]
    fn forbidden_and_unavailable_are_problem_json() {
        assert_eq!(forbidden().status, 403);
        assert_eq!(forbidden().headers[0].1, "application/problem+json");
        assert_eq!(keys_unavailable(10).status, 503);
        assert_eq!(keys_unavailable(0).headers[1].1, "1");
    }
}
