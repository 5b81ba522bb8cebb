//! RFC 9457 `application/problem+json` bodies for the filters' local replies.

use serde_json::json;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// URI identifying the problem type.
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn to_json(&self) -> String {
        json!({
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn body_has_the_four_members() {
        let problem = Problem {
            type_uri: "https://meshward.dev/problems/rate-limited".into(),
            title: "Too Many Requests".into(),
            status: 429,
            detail: "quote \" is escaped".into(),
        };
        let parsed: serde_json::Value = serde_json::from_str(&problem.to_json()).unwrap();
        assert_eq!(parsed["status"], 429);
        assert_eq!(parsed["title"], "Too Many Requests");
        assert_eq!(parsed["detail"], "quote \" is escaped");
        assert_eq!(parsed["type"], "https://meshward.dev/problems/rate-limited");
    }
}
