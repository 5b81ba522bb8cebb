//! Envoy stats as tests read them: `/stats?format=json` and `/stats/prometheus`.

use std::collections::BTreeMap;

/// Counters and gauges by full stat name (histograms are skipped).
pub fn parse_json_stats(body: &str) -> Result<BTreeMap<String, u64>, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("stats JSON: {e}"))?;
    let entries = value
        .get("stats")
        .and_then(|s| s.as_array())
        .ok_or_else(|| "stats JSON has no `stats` array".to_string())?;
    Ok(entries
        .iter()
        .filter_map(|entry| {
            Some((
                entry.get("name")?.as_str()?.to_string(),
                entry.get("value")?.as_u64()?,
            ))
        })
        .collect())
}

/// Value of a Prometheus sample line (`name{labels} value`) whose series starts
/// with `series` exactly (name plus label set as printed).
pub fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_prometheus() {
        let stats =
            parse_json_stats(r#"{"stats":[{"name":"a.b","value":3},{"histograms":{}}]}"#).unwrap();
        assert_eq!(stats.get("a.b"), Some(&3));
        let text = "# TYPE x counter\nx{rule=\"a\"} 5\nx{rule=\"b\"} 7\n";
        assert_eq!(prometheus_value(text, "x{rule=\"b\"}"), Some(7.0));
        assert_eq!(prometheus_value(text, "x{rule=\"c\"}"), None);
    }
}
