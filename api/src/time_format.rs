//! RFC 3339 timestamps (UTC, millisecond precision) for the API, without a date crate: the
//! conversion is the civil-from-days algorithm and its inverse (Howard Hinnant's).

use kuota_engine::Timestamp;

const MILLIS_PER_DAY: i64 = 86_400_000;

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-24T10:00:00.000Z`.
pub fn format(timestamp: Timestamp) -> String {
    let mut text = Vec::with_capacity(24);
    push(timestamp, &mut text);
    String::from_utf8(text).expect("digits and separators are ASCII")
}

/// `format(timestamp)` appended to `out`, for a writer of a document that names a time (an
/// admission's answer), without a `String` of its own.
pub fn push(timestamp: Timestamp, out: &mut Vec<u8>) {
    let millis = timestamp.as_millis() as i64;
    let (year, month, day) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
    let in_day = millis.rem_euclid(MILLIS_PER_DAY);
    let (hours, minutes) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (seconds, fraction) = (in_day / 1_000 % 60, in_day % 1_000);
    if !(0..=9_999).contains(&year) {
        let text =
            format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{fraction:03}Z");
        out.extend_from_slice(text.as_bytes());
        return;
    }
    // Every response that names a time writes one or two: the digits by hand cost a tenth of
    // what `format!` does with its padding.
    let mut text = [0u8; 24];
    let fields = [
        (0, year, 4),
        (5, i64::from(month), 2),
        (8, i64::from(day), 2),
        (11, hours, 2),
        (14, minutes, 2),
        (17, seconds, 2),
        (20, fraction, 3),
    ];
    for (start, mut value, width) in fields {
        for position in (start..start + width).rev() {
            text[position] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (position, separator) in
        [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')]
    {
        text[position] = separator;
    }
    out.extend_from_slice(&text);
}

fn number(text: &str, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|value| range.contains(value))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `None` for anything else or before 1970.
pub fn parse(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = i64::from(number(text.get(0..4)?, 1970..=9999)?);
    let month = number(text.get(5..7)?, 1..=12)?;
    let day = number(text.get(8..10)?, 1..=31)?;
    let hours = i64::from(number(text.get(11..13)?, 0..=23)?);
    let minutes = i64::from(number(text.get(14..16)?, 0..=59)?);
    let seconds = i64::from(number(text.get(17..19)?, 0..=60)?);
    let mut rest = text.get(19..)?;
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = i64::from(number(&padded, 0..=999)?);
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset_hours = i64::from(number(&rest[1..3], 0..=23)?);
            sign * (offset_hours * 60 + i64::from(number(&rest[4..6], 0..=59)?))
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return None; // 31 February and friends
    }
    let total =
        days * MILLIS_PER_DAY + ((hours * 60 + minutes - offset_minutes) * 60 + seconds) * 1_000 + millis;
    u64::try_from(total).ok().map(Timestamp::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_and_parsing_round_trip() {
        for millis in [0u64, 1_000, 951_782_400_000, 1_795_521_600_123, 4_102_444_799_999] {
            let timestamp = Timestamp::from_millis(millis);
            assert_eq!(parse(&format(timestamp)), Some(timestamp), "{}", format(timestamp));
        }
        assert_eq!(format(Timestamp::from_millis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_digits_written_by_hand_are_what_format_writes() {
        let formatted = |millis: u64| {
            let millis = millis as i64;
            let (year, month, day) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
            let in_day = millis.rem_euclid(MILLIS_PER_DAY);
            let (hours, minutes) = (in_day / 3_600_000, in_day / 60_000 % 60);
            let (seconds, fraction) = (in_day / 1_000 % 60, in_day % 1_000);
            format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{fraction:03}Z")
        };
        let mut millis = 7u64;
        // Steps of about eleven days and an odd number of milliseconds, through year 9999 and
        // past it, where the fallback writes the longer year.
        while millis < 260_000_000_000_000 {
            assert_eq!(format(Timestamp::from_millis(millis)), formatted(millis));
            millis += 987_654_321;
        }
        assert_eq!(format(Timestamp::from_millis(253_402_300_799_999)), "9999-12-31T23:59:59.999Z");
        assert_eq!(format(Timestamp::from_millis(253_402_300_800_000)), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn offsets_are_applied_and_invalid_dates_are_refused() {
        assert_eq!(parse("2026-11-24T11:00:00+01:00"), parse("2026-11-24T10:00:00Z"));
        for bad in [
            "2026-02-31T00:00:00Z",
            "2026-11-24 10:00:00Z",
            "2026-11-24T10:00:00",
            "1969-12-31T23:59:59Z",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
