//! `askpro branch set-calcom` and `askpro branch update`: a branch's Cal.com connection,
//! Retell agent, phone number, name, time zone and fallback email.

use anyhow::{anyhow, bail, Context, Result};
use askpro_actors::catalog::{CalcomConfig, DEFAULT_CALCOM_BASE_URL};
use askpro_actors::domain::Branch;
use askpro_actors::error::StoreError;
use askpro_actors::extract::contact;
use askpro_actors::{phone, BranchId, StateStore};
use clap::Args;
use serde_json::{json, Value};

use super::super::output::emit;
use super::non_empty;
use crate::config::Config;

/// `askpro branch set-calcom`.
#[derive(Args, Debug)]
pub struct SetCalcomArgs {
    /// The branch's id (see `askpro branch list`).
    #[arg(long, value_name = "ID")]
    branch: BranchId,
    /// The tenant's Cal.com API key (cal_live_...); stored, never printed.
    #[arg(long, value_name = "KEY")]
    api_key: String,
    /// The Cal.com event type bookings are made for.
    #[arg(long, value_name = "ID")]
    event_type: i64,
    /// Cal.com API base URL, without /v2.
    #[arg(long, value_name = "URL", default_value = DEFAULT_CALCOM_BASE_URL)]
    base_url: String,
    /// Requests per minute allowed for this key (default: the configured one).
    #[arg(long, value_name = "N")]
    rate_limit_per_min: Option<u32>,
    /// Print one JSON document (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

/// `askpro branch update`: only the given flags change.
#[derive(Args, Debug)]
pub struct UpdateBranchArgs {
    /// The branch's id (see `askpro branch list`).
    #[arg(long, value_name = "ID")]
    branch: BranchId,
    /// New number, national (030 1234567) or international (+49 30 1234567) format.
    #[arg(long)]
    phone: Option<String>,
    /// The Retell agent that answers this branch's calls.
    #[arg(long, value_name = "AGENT_ID")]
    agent_id: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// IANA time zone.
    #[arg(long)]
    timezone: Option<String>,
    /// Attendee email for callers who leave no phone or email (anonymous number, nothing
    /// said): Cal.com books them under it, noting that the caller left no contact. Without
    /// one, such calls fail.
    #[arg(long, value_name = "EMAIL", conflicts_with = "clear_fallback_email")]
    fallback_email: Option<String>,
    /// Remove the fallback email: calls without any contact fail again.
    #[arg(long)]
    clear_fallback_email: bool,
    /// Print one JSON document (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

/// `--agent-id`: trimmed; empty is refused rather than stored as "no agent".
pub(in crate::cli) fn agent_id(raw: Option<String>) -> Result<Option<String>> {
    match raw.map(|a| a.trim().to_owned()) {
        Some(a) if a.is_empty() => bail!("--agent-id must not be empty"),
        other => Ok(other),
    }
}

/// A branch as printed: the Cal.com API key redacted.
pub(in crate::cli) fn shown_branch(b: &Branch) -> Value {
    let calcom = b.calcom.as_ref().map(|c| {
        json!({
            "api_key": "<redacted>",
            "event_type_id": c.event_type_id,
            "base_url": c.base_url,
            "rate_limit_per_min": c.rate_limit_per_min,
        })
    });
    json!({
        "id": b.id,
        "company_id": b.company_id,
        "name": b.name,
        "phone": b.phone,
        "timezone": b.timezone,
        "retell_agent_id": b.retell_agent_id,
        "retell_llm_id": b.retell_llm_id,
        "calcom": calcom,
        "fallback_email": b.fallback_email,
        "created_at": b.created_at,
    })
}

pub(in crate::cli) async fn set_calcom(store: &dyn StateStore, args: SetCalcomArgs) -> Result<()> {
    let api_key = args.api_key.trim().to_owned();
    if api_key.is_empty() {
        bail!("--api-key must not be empty");
    }
    if args.event_type <= 0 {
        bail!(
            "--event-type {} must be a positive Cal.com event type id",
            args.event_type
        );
    }
    if args.rate_limit_per_min == Some(0) {
        bail!("--rate-limit-per-min must be at least 1");
    }
    let base_url = calcom_base_url(&args.base_url)?;
    let mut branch = find_branch(store, args.branch).await?;
    branch.calcom = Some(CalcomConfig {
        api_key,
        event_type_id: args.event_type,
        base_url: base_url.clone(),
        rate_limit_per_min: args.rate_limit_per_min,
    });
    store.update_branch(&branch).await?;
    tracing::info!(branch_id = %branch.id, company_id = %branch.company_id, "cal.com connection set");
    emit(args.json, &shown_branch(&branch), |_| {
        format!(
            "branch {} books event type {} at {}",
            branch.id, args.event_type, base_url
        )
    })
}

/// `--base-url`: an http(s) URL without a trailing `/` and without the `/v2` the client adds.
fn calcom_base_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url =
        reqwest::Url::parse(trimmed).with_context(|| format!("--base-url {raw:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("--base-url {raw:?} must be an http(s) URL with a host");
    }
    if trimmed.ends_with("/v2") {
        bail!("--base-url {raw:?} must not end in /v2 (the client appends /v2/...)");
    }
    Ok(trimmed.to_owned())
}

pub(in crate::cli) async fn update_branch(
    config: &Config,
    store: &dyn StateStore,
    args: UpdateBranchArgs,
) -> Result<()> {
    let UpdateBranchArgs {
        branch: id,
        phone: raw_phone,
        agent_id: raw_agent,
        name,
        timezone,
        fallback_email,
        clear_fallback_email,
        json,
    } = args;
    let nothing = raw_phone.is_none()
        && raw_agent.is_none()
        && name.is_none()
        && timezone.is_none()
        && fallback_email.is_none()
        && !clear_fallback_email;
    if nothing {
        bail!(
            "nothing to update: pass --phone, --agent-id, --name, --timezone, --fallback-email \
             or --clear-fallback-email"
        );
    }
    let fallback = fallback_email.as_deref().map(checked_email).transpose()?;
    let mut branch = find_branch(store, id).await?;
    if fallback.is_some() || clear_fallback_email {
        branch.fallback_email = fallback;
    }
    if let Some(raw) = &raw_phone {
        branch.phone = phone::normalize(raw, &config.phone.default_region)
            .with_context(|| format!("--phone {raw:?}"))?;
    }
    if let Some(agent) = agent_id(raw_agent)? {
        branch.retell_agent_id = Some(agent);
    }
    if let Some(name) = name {
        branch.name = non_empty("--name", &name)?;
    }
    if let Some(tz) = timezone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            bail!("--timezone {tz:?} is not an IANA time zone (e.g. Europe/Berlin)");
        }
        branch.timezone = tz;
    }
    store.update_branch(&branch).await.map_err(|e| match e {
        StoreError::Conflict(why) => anyhow!("--phone {}: {why}", branch.phone),
        other => other.into(),
    })?;
    emit(json, &shown_branch(&branch), |_| {
        format!(
            "updated branch {} ({}) with phone {}",
            branch.id, branch.name, branch.phone
        )
    })
}

/// `--fallback-email`: what the pipeline accepts as an attendee email, nothing looser.
fn checked_email(raw: &str) -> Result<String> {
    contact::email(raw).ok_or_else(|| {
        anyhow!("--fallback-email {raw:?} is not an email address (e.g. termine@salon.example)")
    })
}

/// A branch by id alone: scans every company's branches (an admin command; there are few).
pub(crate) async fn find_branch(store: &dyn StateStore, id: BranchId) -> Result<Branch> {
    for company in store.companies().await? {
        if let Some(branch) = store.branch(company.id, id).await? {
            return Ok(branch);
        }
    }
    bail!("--branch {id}: no such branch in any company (see `askpro branch list`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_is_normalized_and_checked() {
        assert_eq!(
            calcom_base_url("https://api.cal.com/").unwrap(),
            "https://api.cal.com"
        );
        assert_eq!(
            calcom_base_url("http://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        for bad in [
            "https://api.cal.com/v2",
            "https://api.cal.com/v2/",
            "ftp://x.org",
            "nope",
        ] {
            let err = calcom_base_url(bad).unwrap_err().to_string();
            assert!(err.contains("--base-url"), "{bad}: {err}");
        }
    }

    #[test]
    fn fallback_email_is_checked() {
        assert_eq!(
            checked_email(" Termine@Salon.Example ").unwrap(),
            "Termine@salon.example"
        );
        for bad in ["", "termine", "termine@salon", "a b@salon.example"] {
            let err = checked_email(bad).unwrap_err().to_string();
            assert!(err.contains("--fallback-email"), "{bad}: {err}");
        }
    }
}
