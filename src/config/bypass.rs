//! The `bypass:` section as written, with its defaults: which cookies mark a visitor the cache
//! must not serve, and the analytics and consent cookies that never do. Beside `raw.rs` for
//! the length of the default list; validated in `validate.rs` like every section.

use serde::Deserialize;

/// `bypass:`: who is served from the cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBypass {
    /// `bypass.session_cookies` (docs/configuration.md).
    #[serde(default)]
    pub session_cookies: Vec<String>,
    /// `bypass.ignore_cookies` (docs/configuration.md).
    #[serde(default = "default_ignore_cookies")]
    pub ignore_cookies: Vec<String>,
}

impl Default for RawBypass {
    fn default() -> Self {
        RawBypass {
            session_cookies: Vec::new(),
            ignore_cookies: default_ignore_cookies(),
        }
    }
}

/// Analytics, advertising and consent cookies: set by scripts in the browser, never read by
/// the app to render a page (Google Analytics and Ads, Meta, Hotjar, Matomo, Microsoft
/// Clarity and Ads, HubSpot, Cloudflare, the common consent managers).
fn default_ignore_cookies() -> Vec<String> {
    [
        "_ga",
        "_ga_*",
        "_gid",
        "_gat",
        "_gat_*",
        "_gcl_*",
        "__utm*",
        "_fbp",
        "_fbc",
        "_hj*",
        "_pk_*",
        "_clck",
        "_clsk",
        "_uetsid",
        "_uetvid",
        "__hstc",
        "__hssrc",
        "__hssc",
        "hubspotutk",
        "__cf_bm",
        "_cfuvid",
        "CookieConsent",
        "cookieconsent_status",
        "OptanonConsent",
        "OptanonAlertBoxClosed",
        "euconsent-v2",
        "cookielawinfo-*",
        "_tt_*",
        "_ttp",
        "_pin_unauth",
        "_scid",
        "_rdt_uuid",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
