//! Validation of `[retell]`.

use super::{ConfigError, RetellConfig};

impl RetellConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_base_url(&self.api_base_url).map_err(|problem| ConfigError::Invalid {
            key: "retell.api_base_url",
            problem,
        })?;
        if self.public_url.is_empty() {
            return Ok(());
        }
        check_base_url(&self.public_url).map_err(|problem| ConfigError::Invalid {
            key: "retell.public_url",
            problem,
        })
    }
}

/// An http(s) URL without query or fragment (endpoint paths are appended to it).
pub fn check_base_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?} must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must have no query or fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_base_url;

    #[test]
    fn base_urls() {
        assert!(check_base_url("https://api.retellai.com").is_ok());
        assert!(check_base_url("http://127.0.0.1:8097/").is_ok());
        for bad in ["", "api.retellai.com", "ftp://x", "https://x?a=1"] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
}
