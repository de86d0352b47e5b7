//! Due dates in meeting language, resolved against the meeting's date: ISO dates, "March 20",
//! "20 March", "today", "tomorrow", "(by|on|next) Friday", "end of week", "next week",
//! "end of month", "in 3 days", "in two weeks".
//!
//! Rules where speech is ambiguous: a bare weekday is the next such day after the meeting
//! (a week later when the meeting is on that day); "next `<weekday>`" is that day in the
//! following Monday-to-Sunday week; "end of week" is the week's Friday; "next week" is the
//! next Monday. Relative phrases need the meeting date; without it only absolute dates
//! resolve.

use time::{Date, Duration, Month, Weekday};

/// A date found in a sentence and the words that said it (with their preposition), so
/// the caller can remove them from a task title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub date: Date,
    pub phrase: String,
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Monday),
    ("tuesday", Weekday::Tuesday),
    ("wednesday", Weekday::Wednesday),
    ("thursday", Weekday::Thursday),
    ("friday", Weekday::Friday),
    ("saturday", Weekday::Saturday),
    ("sunday", Weekday::Sunday),
];

const MONTHS: [(&str, Month); 12] = [
    ("january", Month::January),
    ("february", Month::February),
    ("march", Month::March),
    ("april", Month::April),
    ("may", Month::May),
    ("june", Month::June),
    ("july", Month::July),
    ("august", Month::August),
    ("september", Month::September),
    ("october", Month::October),
    ("november", Month::November),
    ("december", Month::December),
];

const PREPOSITIONS: &[&str] = &[
    "by",
    "on",
    "before",
    "until",
    "due",
    "this",
    "for",
    "no later than",
];

/// Parses `2025-03-14`.
pub fn parse_iso(text: &str) -> Option<Date> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i32 = text[0..4].parse().ok()?;
    let month: u8 = text[5..7].parse().ok()?;
    let day: u8 = text[8..10].parse().ok()?;
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

fn number(word: &str) -> Option<i64> {
    let small = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    word.parse()
        .ok()
        .or_else(|| small.iter().position(|w| *w == word).map(|n| n as i64))
}

fn day_of_month(word: &str) -> Option<u8> {
    let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

/// Finds the first due date in `sentence`.
pub fn find(sentence: &str, meeting: Option<Date>) -> Option<Found> {
    let lower = sentence.to_lowercase();
    // Words with their byte spans in the sentence, punctuation trimmed.
    let mut words: Vec<(&str, usize, usize)> = Vec::new();
    let mut pos = 0;
    for raw in lower.split_whitespace() {
        let start = lower[pos..].find(raw).map_or(pos, |i| pos + i);
        pos = start + raw.len();
        let lead = raw.len() - raw.trim_start_matches(|c: char| !c.is_alphanumeric()).len();
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '-');
        if !word.is_empty() {
            words.push((word, start + lead, start + lead + word.len()));
        }
    }
    let w = |i: usize| words.get(i).map(|x| x.0).unwrap_or("");
    for i in 0..words.len() {
        let Some((date, last)) =
            match_at(&words.iter().map(|x| x.0).collect::<Vec<_>>(), i, meeting)
        else {
            continue;
        };
        // Include a preposition just before ("by Friday"), so titles lose it too.
        let first = if i > 0 && PREPOSITIONS.contains(&w(i - 1)) {
            i - 1
        } else if i > 2 && w(i - 3) == "no" && w(i - 2) == "later" && w(i - 1) == "than" {
            i - 3
        } else {
            i
        };
        let phrase = sentence[words[first].1..words[last].2].to_owned();
        return Some(Found { date, phrase });
    }
    None
}

/// A date phrase starting at word `i`: the date and the index of its last word.
fn match_at(words: &[&str], i: usize, meeting: Option<Date>) -> Option<(Date, usize)> {
    let w = |k: usize| words.get(k).copied().unwrap_or("");
    if let Some(date) = parse_iso(w(i)) {
        return Some((date, i));
    }
    // "March 20" / "20 March" / "March 20th"
    if let Some((_, month)) = MONTHS
        .iter()
        .find(|(name, _)| *name == w(i) || (name.len() > 3 && w(i) == &name[..3]))
        && let Some(day) = day_of_month(w(i + 1))
    {
        return Some((in_year_after(meeting?, *month, day)?, i + 1));
    }
    if let Some(day) = day_of_month(w(i))
        && w(i).chars().next().is_some_and(|c| c.is_ascii_digit())
        && let Some((_, month)) = MONTHS.iter().find(|(name, _)| *name == w(i + 1))
    {
        return Some((in_year_after(meeting?, *month, day)?, i + 1));
    }
    let today = meeting?;
    match w(i) {
        "today" | "tonight" | "eod" => return Some((today, i)),
        "tomorrow" => return Some((today + Duration::days(1), i)),
        "eow" => return Some((end_of_week(today), i)),
        "end" if w(i + 1) == "of" => {
            let k = if w(i + 2) == "the" { i + 3 } else { i + 2 };
            match w(k) {
                "day" => return Some((today, k)),
                "week" => return Some((end_of_week(today), k)),
                "month" => return Some((end_of_month(today), k)),
                _ => {}
            }
        }
        "next" if w(i + 1) == "week" => {
            return Some((next_weekday(today, Weekday::Monday), i + 1));
        }
        "next" => {
            if let Some((_, day)) = WEEKDAYS.iter().find(|(name, _)| *name == w(i + 1)) {
                let monday_next = next_weekday(today, Weekday::Monday);
                let offset = day.number_days_from_monday() as i64;
                return Some((monday_next + Duration::days(offset), i + 1));
            }
        }
        "in" | "within" => {
            if let Some(n) = number(w(i + 1)) {
                let unit = w(i + 2);
                let days = match unit {
                    "day" | "days" => n,
                    "week" | "weeks" => n * 7,
                    _ => return None,
                };
                return Some((today + Duration::days(days), i + 2));
            }
        }
        word => {
            if let Some((_, day)) = WEEKDAYS.iter().find(|(name, _)| *name == word) {
                return Some((next_weekday(today, *day), i));
            }
        }
    }
    None
}

/// The first `day` strictly after `from`.
fn next_weekday(from: Date, day: Weekday) -> Date {
    let ahead = (day.number_days_from_monday() as i64
        - from.weekday().number_days_from_monday() as i64)
        .rem_euclid(7);
    from + Duration::days(if ahead == 0 { 7 } else { ahead })
}

/// The Friday of `from`'s week; on a weekend, the next Friday.
fn end_of_week(from: Date) -> Date {
    let ahead = 4 - from.weekday().number_days_from_monday() as i64;
    if ahead >= 0 {
        from + Duration::days(ahead)
    } else {
        next_weekday(from, Weekday::Friday)
    }
}

fn end_of_month(from: Date) -> Date {
    let last = from.month().length(from.year());
    from.replace_day(last).unwrap_or(from)
}

/// `month`/`day` in the meeting's year, or the next year when that is well in the past.
fn in_year_after(meeting: Date, month: Month, day: u8) -> Option<Date> {
    let this_year = Date::from_calendar_date(meeting.year(), month, day).ok()?;
    if this_year < meeting - Duration::days(31) {
        Date::from_calendar_date(meeting.year() + 1, month, day).ok()
    } else {
        Some(this_year)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(text: &str) -> Option<(String, String)> {
        // 2025-03-12 is a Wednesday.
        let meeting = parse_iso("2025-03-12");
        find(text, meeting).map(|f| (f.date.to_string(), f.phrase))
    }

    #[test]
    fn relative_dates_resolve_against_the_meeting() {
        let pair = |d: &str, p: &str| Some((d.to_owned(), p.to_owned()));
        assert_eq!(on("Send it by Friday."), pair("2025-03-14", "by Friday"));
        assert_eq!(on("on Wednesday"), pair("2025-03-19", "on Wednesday"));
        assert_eq!(on("ready next Tuesday"), pair("2025-03-18", "next Tuesday"));
        assert_eq!(on("Tomorrow works"), pair("2025-03-13", "Tomorrow"));
        assert_eq!(
            on("by end of the week"),
            pair("2025-03-14", "by end of the week")
        );
        assert_eq!(on("sometime next week"), pair("2025-03-17", "next week"));
        assert_eq!(
            on("before the end of month"),
            pair("2025-03-31", "end of month")
        );
        assert_eq!(on("by end of month"), pair("2025-03-31", "by end of month"));
        assert_eq!(on("in two weeks"), pair("2025-03-26", "in two weeks"));
        assert_eq!(on("due 2025-04-02"), pair("2025-04-02", "due 2025-04-02"));
        assert_eq!(on("by March 20th,"), pair("2025-03-20", "by March 20th"));
        assert_eq!(on("on 3 January"), pair("2026-01-03", "on 3 January"));
        assert_eq!(on("no date here"), None);
    }

    #[test]
    fn without_a_meeting_date_only_absolute_dates_resolve() {
        assert_eq!(find("by Friday", None), None);
        assert_eq!(
            find("by 2025-05-01", None).map(|f| f.date.to_string()),
            Some("2025-05-01".into())
        );
    }
}
