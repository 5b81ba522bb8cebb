//! Durations written as strings in filter configuration (`"250ms"`, `"1m"`, `"1h30m"`),
//! per the project convention.

pub const UNITS_HELP: &str =
    "a duration such as \"250ms\", \"10s\", \"1m\", \"1h30m\" (units: ns, us, ms, s, m, h, d)";

/// Parses a duration into nanoseconds. Rejects empty strings, missing units, unknown
/// units, zero and overflow.
pub fn parse_duration_nanos(text: &str) -> Result<u64, String> {
    match parse_duration_or_zero_nanos(text)? {
        0 => Err(format!("{text:?} must be greater than zero")),
        total => Ok(total),
    }
}

/// Like [`parse_duration_nanos`], for settings where zero means "none" (a clock skew).
pub fn parse_duration_or_zero_nanos(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("expected {UNITS_HELP}, got an empty string"));
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after_digits) = rest.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!("expected {UNITS_HELP}, got {text:?}"));
        }
        let unit_end = after_digits
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let (unit, after_unit) = after_digits.split_at(unit_end);
        let per_unit: u64 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(format!("{text:?} has no unit; expected {UNITS_HELP}")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; expected {UNITS_HELP}"
                ))
            }
        };
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        total = amount
            .checked_mul(per_unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{text:?} is too large"))?;
        rest = after_unit;
    }
    Ok(total)
}

/// The shortest exact spelling in the largest whole unit (`3600s` → `"1h"`).
pub fn format_duration_nanos(nanos: u64) -> String {
    const UNITS: [(u64, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| nanos % size == 0 && nanos > 0)
        .map_or_else(
            || "0s".to_owned(),
            |(size, unit)| format!("{}{unit}", nanos / size),
        )
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration_nanos("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration_nanos("1m"), Ok(60_000_000_000));
        assert_eq!(parse_duration_nanos("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration_nanos("2d"), Ok(172_800_000_000_000));
        assert_eq!(parse_duration_nanos(" 10s "), Ok(10_000_000_000));
    }

    #[test]
    fn formats_in_the_largest_whole_unit() {
        assert_eq!(format_duration_nanos(3_600_000_000_000), "1h");
        assert_eq!(format_duration_nanos(90_000_000_000), "90s");
        assert_eq!(format_duration_nanos(250_000_000), "250ms");
        assert_eq!(format_duration_nanos(0), "0s");
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "10",
            "s",
            "10x",
            "-1s",
            "0s",
            "1.5s",
            "99999999999999999999d",
        ] {
            let err = parse_duration_nanos(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse_duration_nanos("10").unwrap_err().contains("no unit"));
        assert!(parse_duration_nanos("10x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
    }

    #[test]
    fn zero_is_allowed_only_where_asked_for() {
        assert_eq!(parse_duration_or_zero_nanos("0s"), Ok(0));
        assert_eq!(parse_duration_or_zero_nanos("1ms"), Ok(1_000_000));
        assert!(parse_duration_or_zero_nanos("0").is_err());
        assert!(parse_duration_nanos("0s")
            .unwrap_err()
            .contains("greater than zero"));
    }
}
