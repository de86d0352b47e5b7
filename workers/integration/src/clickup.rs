//! ClickUp API v2: create a task in a list, set a task's status.
//!
//! Authentication is the personal token itself in `Authorization` (no `Bearer`). Errors come
//! as `{"err": "…", "ECODE": "…"}`; rate limits as 429 with `X-RateLimit-Reset` (Unix seconds).

use reqwest::{Method, header::CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_runtime::config::{ClickUpSettings, Secret};

use crate::{
    Error,
    http::{Http, Reply, body_text, check_id, endpoint, status_error},
    metrics::System,
    status::{CHECK_TIMEOUT, Check},
};

/// `integration.clickup.create_task` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub list_id: String,
    pub name: String,
    pub description: Option<String>,
    pub assignees: Option<Vec<String>>,
    pub due_date: Option<String>,
    pub priority: Option<u8>,
    pub tags: Option<Vec<String>>,
}

/// `integration.clickup.update_status` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStatus {
    pub task_id: String,
    pub status: String,
}

/// The ClickUp client.
#[derive(Debug, Clone)]
pub struct ClickUp {
    token: Option<Secret>,
    base_url: String,
}

impl ClickUp {
    pub fn new(settings: &ClickUpSettings, token: Option<Secret>) -> Self {
        ClickUp {
            token,
            base_url: settings.base_url.clone(),
        }
    }

    fn request(
        &self,
        http: &Http,
        method: Method,
        url: reqwest::Url,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let token = self.token.as_ref().ok_or(Error::NotConfigured {
            what: "ClickUp",
            key: "integration.clickup.token (or token_file)",
        })?;
        Ok(http
            .client
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, token.expose())
            .header(CONTENT_TYPE, "application/json"))
    }

    /// Checks the token with `GET /api/v2/user` (read-only); says whose token it is.
    pub(crate) async fn check(&self, http: &Http) -> Check {
        const NAME: &str = "clickup";
        if self.token.is_none() {
            return Check::not_configured(NAME, "integration.clickup.token (or token_file)");
        }
        let outcome = async {
            let url = endpoint(&self.base_url, &["api", "v2", "user"])?;
            let request = self.request(http, Method::GET, url)?.timeout(CHECK_TIMEOUT);
            let me = http.call(System::ClickUp, request, parse_reply).await?;
            Ok(
                match me["user"]["username"].as_str().filter(|u| !u.is_empty()) {
                    Some(user) => format!("authenticated as {user}"),
                    None => "authenticated".to_owned(),
                },
            )
        }
        .await;
        Check::checked(NAME, outcome)
    }

    /// Creates the task; returns `{task_id, url}`.
    pub(crate) async fn create_task(&self, http: &Http, input: CreateTask) -> Result<Value, Error> {
        check_id("list_id", input.list_id.trim())?;
        let body = task_body(&input)?;
        let url = endpoint(
            &self.base_url,
            &["api", "v2", "list", input.list_id.trim(), "task"],
        )?;
        let request = self.request(http, Method::POST, url)?.json(&body);
        let task = http.call(System::ClickUp, request, parse_reply).await?;
        let task_id = task["id"].as_str().unwrap_or_default();
        if task_id.is_empty() {
            return Err(Error::BadResponse {
                system: System::ClickUp,
                message: "the created task has no id".into(),
            });
        }
        Ok(json!({ "task_id": task_id, "url": task["url"].as_str().unwrap_or_default() }))
    }

    /// Sets the task's status; returns `{task_id, status}` as ClickUp reports them.
    pub(crate) async fn update_status(
        &self,
        http: &Http,
        input: UpdateStatus,
    ) -> Result<Value, Error> {
        let task_id = input.task_id.trim();
        check_id("task_id", task_id)?;
        if input.status.trim().is_empty() {
            return Err(Error::invalid(
                "status",
                "blank; give a status of the task's list",
            ));
        }
        let url = endpoint(&self.base_url, &["api", "v2", "task", task_id])?;
        let request = self
            .request(http, Method::PUT, url)?
            .json(&json!({ "status": input.status.trim() }));
        let task = http.call(System::ClickUp, request, parse_reply).await?;
        let status = task["status"]["status"]
            .as_str()
            .unwrap_or(input.status.trim())
            .to_owned();
        Ok(json!({ "task_id": task["id"].as_str().unwrap_or(task_id), "status": status }))
    }
}

/// The create-task body: Markdown description in `markdown_content`, assignees as the
/// integer user ids ClickUp expects, the due date in Unix milliseconds.
fn task_body(input: &CreateTask) -> Result<Value, Error> {
    if input.name.trim().is_empty() {
        return Err(Error::invalid("name", "blank; give the task a name"));
    }
    let mut body = json!({ "name": input.name.trim() });
    if let Some(d) = input
        .description
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        body["markdown_content"] = json!(d.trim());
    }
    if let Some(assignees) = &input.assignees {
        let ids = assignees
            .iter()
            .map(|a| {
                a.trim().parse::<u64>().map_err(|_| {
                    Error::invalid(
                        "assignees",
                        format!("{a:?} is not a ClickUp user id; expected digits"),
                    )
                })
            })
            .collect::<Result<Vec<u64>, Error>>()?;
        body["assignees"] = json!(ids);
    }
    if let Some(due) = input.due_date.as_deref().map(str::trim) {
        let (ms, has_time) = parse_due(due)?;
        body["due_date"] = json!(ms);
        body["due_date_time"] = json!(has_time);
    }
    if let Some(p) = input.priority {
        if !(1..=4).contains(&p) {
            return Err(Error::invalid("priority", format!("{p} is not 1 to 4")));
        }
        body["priority"] = json!(p);
    }
    if let Some(tags) = &input.tags {
        let tags: Vec<&str> = tags
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        body["tags"] = json!(tags);
    }
    Ok(body)
}

/// An ISO 8601 date (`2025-03-21`, midnight UTC) or date-time with offset
/// (`2025-03-21T17:00:00Z`, `…+02:00`) as Unix milliseconds, and whether it had a time.
pub fn parse_due(s: &str) -> Result<(i64, bool), Error> {
    let bad = || {
        Error::invalid(
            "due_date",
            format!(
                "{s:?} is not an ISO 8601 date; expected `2025-03-21` or `2025-03-21T17:00:00Z`"
            ),
        )
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, d);
    let Some(time) = time else {
        return Ok((days * 86_400_000, false));
    };
    // hh:mm[:ss[.fff]] then Z or ±hh:mm
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').unwrap_or((&off[1..], "00"));
        let oh: i64 = oh.parse().map_err(|_| bad())?;
        let om: i64 = om.parse().map_err(|_| bad())?;
        (c, sign * (oh * 3600 + om * 60))
    } else {
        return Err(bad());
    };
    let mut hms = clock.split(':');
    let h: i64 = hms.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let mi: i64 = hms.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let (sec, ms): (i64, i64) = match hms.next() {
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, "0"));
            let frac = format!("{frac:0<3}");
            (
                whole.parse().map_err(|_| bad())?,
                frac[..3].parse().map_err(|_| bad())?,
            )
        }
        None => (0, 0),
    };
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Ok((secs * 1000 + ms, true))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A 2xx reply's JSON, or ClickUp's `{"err", "ECODE"}` as the error message.
fn parse_reply(reply: Reply) -> Result<Value, Error> {
    if reply.status.is_success() {
        return serde_json::from_slice(&reply.body).map_err(|e| Error::BadResponse {
            system: System::ClickUp,
            message: e.to_string(),
        });
    }
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let message = match (body["err"].as_str(), body["ECODE"].as_str()) {
        (Some(err), Some(code)) => format!("{err} ({code})"),
        (Some(err), None) => err.to_owned(),
        _ => body_text(&reply.body),
    };
    Err(status_error(System::ClickUp, &reply, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_dates_parse_to_unix_milliseconds() {
        assert_eq!(parse_due("1970-01-02").unwrap(), (86_400_000, false));
        assert_eq!(parse_due("2025-03-21").unwrap(), (1_742_515_200_000, false));
        assert_eq!(
            parse_due("2025-03-21T17:00:00Z").unwrap(),
            (1_742_576_400_000, true)
        );
        assert_eq!(
            parse_due("2025-03-21T19:00:00+02:00").unwrap(),
            (1_742_576_400_000, true)
        );
        assert_eq!(parse_due("2024-02-29").unwrap().0, 1_709_164_800_000);
        for bad in [
            "2025-02-29",
            "21/03/2025",
            "2025-13-01",
            "2025-03-21T17:00",
            "soon",
        ] {
            assert!(parse_due(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn assignees_must_be_user_ids() {
        let input = CreateTask {
            list_id: "1".into(),
            name: "n".into(),
            description: None,
            assignees: Some(vec!["ada".into()]),
            due_date: None,
            priority: None,
            tags: None,
        };
        assert!(
            matches!(task_body(&input), Err(Error::InvalidInput { field, .. }) if field == "assignees")
        );
    }

    #[test]
    fn a_blank_name_or_due_date_is_refused_by_name() {
        let task = |name: &str, due: Option<&str>| CreateTask {
            list_id: "1".into(),
            name: name.into(),
            description: None,
            assignees: None,
            due_date: due.map(str::to_owned),
            priority: None,
            tags: None,
        };
        for (input, want) in [
            (task(" \u{c}", None), "name"),
            (task("n", Some("")), "due_date"),
            (task("n", Some("  ")), "due_date"),
        ] {
            assert!(
                matches!(task_body(&input), Err(Error::InvalidInput { ref field, .. }) if field == want),
                "{input:?}"
            );
        }
        assert!(task_body(&task("n", Some("2025-03-21"))).is_ok());
    }
}
