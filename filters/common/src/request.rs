//! The request as the filter cores see it: header pairs (HTTP/2-style lowercase names,
//! pseudo-headers included) plus connection facts the host supplies. Built once per
//! request by the adapter from a single host call, then read by matchers and key
//! extractors without further host crossings.

use std::rc::Rc;

/// Header pairs, shared: the bundle hands one read of the request head to several
/// filters without copying it.
pub type Headers = Rc<Vec<(String, String)>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    headers: Headers,
    source_address: Option<String>,
}

impl RequestHead {
    /// `headers` as Envoy hands them over (lowercase names); `source_address` is the
    /// downstream peer (`ip:port` or bare ip), when the caller fetched it.
    pub fn new(headers: Vec<(String, String)>, source_address: Option<String>) -> Self {
        Self::shared(Rc::new(headers), source_address)
    }

    /// Like [`RequestHead::new`], over header pairs others may hold too.
    pub fn shared(headers: Headers, source_address: Option<String>) -> Self {
        Self {
            headers,
            source_address,
        }
    }

    /// The same request without the headers named in `names` (lowercase): what a
    /// filter sees after removing headers it owns, so nothing downstream of that removal
    /// can match on a client-sent copy.
    pub fn without_headers(mut self, names: &[String]) -> Self {
        let named = |key: &str| names.iter().any(|name| key.eq_ignore_ascii_case(name));
        // Copied only when there is something to remove (rarely: clients do not send
        // the headers a filter owns).
        if self.headers.iter().any(|(key, _)| named(key)) {
            Rc::make_mut(&mut self.headers).retain(|(key, _)| !named(key));
        }
        self
    }

    /// First value of a header; `name` must be lowercase.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a header, in arrival order; `name` must be lowercase.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn method(&self) -> Option<&str> {
        self.header(":method")
    }

    /// `:authority` without a port (IPv6 literals keep their brackets).
    pub fn host(&self) -> Option<&str> {
        self.header(":authority")
            .or_else(|| self.header("host"))
            .map(strip_port)
    }

    /// `:path` without the query string.
    pub fn path(&self) -> Option<&str> {
        self.header(":path")
            .map(|full| full.split_once('?').map_or(full, |(path, _)| path))
    }

    /// First value of a query parameter, as sent (not percent-decoded).
    pub fn query_parameter<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.query_parameters(name).next()
    }

    /// Every value of a query parameter, in order, as sent.
    pub fn query_parameters<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let query = self
            .header(":path")
            .and_then(|path| path.split_once('?'))
            .map_or("", |(_, query)| query);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(move |pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key == name).then_some(value)
            })
    }

    /// First value of a cookie across every `cookie` header (HTTP/2 may split them).
    pub fn cookie<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.cookies(name).next()
    }

    /// Every value of a cookie, across every `cookie` header, in order.
    pub fn cookies<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values("cookie").flat_map(move |header| {
            header.split(';').filter_map(move |pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key.trim() == name).then(|| value.trim().trim_matches('"'))
            })
        })
    }

    /// The downstream peer's IP address (port removed).
    pub fn source_ip(&self) -> Option<&str> {
        self.source_address.as_deref().map(strip_address_port)
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .and_then(|end| authority.get(..=end))
            .unwrap_or(authority);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// `1.2.3.4:80` → `1.2.3.4`, `[::1]:80` → `::1`, bare addresses unchanged.
pub fn strip_address_port(address: &str) -> &str {
    let address = address.trim();
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match address.matches(':').count() {
        1 => address.split_once(':').map_or(address, |(ip, _)| ip),
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn head(pairs: &[(&str, &str)]) -> RequestHead {
        RequestHead::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Some("10.0.0.7:5555".into()),
        )
    }

    #[test]
    fn reads_pseudo_headers_and_strips_query_and_port() {
        let req = head(&[
            (":method", "GET"),
            (":path", "/a/b?x=1&y=2"),
            (":authority", "api.example.com:8080"),
        ]);
        assert_eq!(req.method(), Some("GET"));
        assert_eq!(req.path(), Some("/a/b"));
        assert_eq!(req.host(), Some("api.example.com"));
        assert_eq!(req.query_parameter("y"), Some("2"));
        assert_eq!(req.query_parameter("z"), None);
        assert_eq!(req.source_ip(), Some("10.0.0.7"));
    }

    #[test]
    fn cookies_are_found_across_headers() {
        let req = head(&[("cookie", "a=1; b=2"), ("cookie", "session=abc")]);
        assert_eq!(req.cookie("b"), Some("2"));
        assert_eq!(req.cookie("session"), Some("abc"));
        assert_eq!(req.cookie("missing"), None);
    }

    #[test]
    fn removed_headers_are_gone_in_every_casing_and_copy() {
        let req = head(&[("x-user", "a"), ("X-User", "b"), ("x-other", "c")])
            .without_headers(&["x-user".to_owned()]);
        assert_eq!(req.header("x-user"), None);
        assert_eq!(req.header("x-other"), Some("c"));
    }

    #[test]
    fn repeated_query_parameters_and_cookies_are_all_visible() {
        let req = head(&[
            (":path", "/x?t=1&u=2&t=3#frag"),
            ("cookie", "t=a; t=b"),
            ("cookie", "t=c"),
        ]);
        assert_eq!(req.query_parameters("t").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(req.query_parameter("u"), Some("2"));
        assert_eq!(req.cookies("t").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(head(&[(":path", "/x")]).query_parameters("t").count(), 0);
    }

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(strip_address_port("[::1]:443"), "::1");
        assert_eq!(strip_address_port("::1"), "::1");
        assert_eq!(strip_address_port("1.2.3.4"), "1.2.3.4");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
    }
}
