//! Which module runs a filter in a test: the filter's own module, or the bundle
//! (`meshward_bundle`) with only that filter's section. The e2e suites of the four
//! filters take a [`Packaging`] and run once each way: [`packaged_tests!`] turns each
//! `fn name(packaging: Packaging)` into the tests `separate::name` and `bundle::name`.

use serde_json::Value;

use crate::bootstrap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// `meshward_ratelimit.wasm` with the filter's configuration.
    Separate,
    /// `meshward_bundle.wasm` with `{"ratelimit": <the filter's configuration>}`.
    Bundle,
}

impl Packaging {
    /// The module that runs `filter` (a module name such as `meshward_ratelimit`).
    pub fn module(self, filter: &str) -> &str {
        match self {
            Packaging::Separate => filter,
            Packaging::Bundle => "meshward_bundle",
        }
    }

    /// The plugin configuration that runs `filter` with `configuration` (the filter's
    /// own JSON). For the bundle the text is nested as is, so a configuration that is
    /// not valid JSON stays invalid.
    pub fn configuration(self, filter: &str, configuration: &str) -> String {
        match self {
            Packaging::Separate => configuration.to_owned(),
            Packaging::Bundle => format!("{{\"{}\": {configuration}}}", section(filter)),
        }
    }

    /// The HTTP filter entry that runs `filter` with `configuration`.
    pub fn filter(self, filter: &str, configuration: &str) -> Result<Value, String> {
        bootstrap::meshward_filter(
            self.module(filter),
            &self.configuration(filter, configuration),
        )
    }
}

/// The bundle's section for a filter module.
fn section(filter: &str) -> &str {
    match filter {
        "meshward_trace_inject" => "traceInject",
        "meshward_authz" => "authz",
        "meshward_ratelimit" => "ratelimit",
        "meshward_idempotency" => "idempotency",
        other => other,
    }
}

/// Declares each listed `fn name(packaging: Packaging)` as two tests,
/// `separate::name` and `bundle::name`.
#[macro_export]
macro_rules! packaged_tests {
    ($($name:ident),+ $(,)?) => {
        mod separate {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::packaging::Packaging::Separate)
                }
            )+
        }
        mod bundle {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::packaging::Packaging::Bundle)
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_gets_the_filter_configuration_as_its_section() {
        let config = r#"{"rules": []}"#;
        assert_eq!(
            Packaging::Bundle.configuration("meshward_ratelimit", config),
            r#"{"ratelimit": {"rules": []}}"#
        );
        assert_eq!(
            Packaging::Bundle.configuration("meshward_trace_inject", "{}"),
            r#"{"traceInject": {}}"#
        );
        assert_eq!(
            Packaging::Separate.configuration("meshward_authz", config),
            config
        );
        assert_eq!(
            Packaging::Bundle.module("meshward_idempotency"),
            "meshward_bundle"
        );
    }
}
