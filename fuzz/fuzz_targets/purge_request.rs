//! `lacquer::purge::PurgeApiRequest::parse`, the admin listener's `POST /purge` body parser, on
//! arbitrary bytes, with the default tracking parameters.
//!
//! Properties (beyond "never panics"), for every body it accepts:
//! - One scope per entry, in order (`urls`, `tags`, `prefixes`), then `All` exactly when
//!   `"all": true`; at most `MAX_API_ENTRIES` entries; never an empty request.
//! - A URL scope is the hash of `RequestKey::from_url` of that URL; a tag scope is the tag,
//!   non-empty visible ASCII of at most `MAX_TAG_LEN` bytes; a prefix scope (at most
//!   `MAX_PREFIX_LEN` bytes) is `http(s)://host/...` and normalising it again
//!   changes nothing.
//! - Re-serialising the accepted request to JSON and parsing it again gives the same request
//!   and the same scopes.
//! - Errors are non-empty messages.
#![no_main]

use lacquer::cache::key::RequestKey;
use lacquer::cache::storage::PurgeScope;
use lacquer::config::raw::default_tracking_params;
use lacquer::config::NamePattern;
use lacquer::cache::tags::MAX_TAG_LEN;
use lacquer::purge::{normalize_prefix, PurgeApiRequest, MAX_API_ENTRIES, MAX_PREFIX_LEN};
use libfuzzer_sys::fuzz_target;

fn reserialise(req: &PurgeApiRequest) -> Vec<u8> {
    serde_json::json!({
        "urls": req.urls,
        "tags": req.tags,
        "prefixes": req.prefixes,
        "all": req.all,
        "soft": req.soft,
    })
    .to_string()
    .into_bytes()
}

fuzz_target!(|body: &[u8]| {
    let tracking: Vec<NamePattern> = default_tracking_params()
        .iter()
        .map(|p| NamePattern::new(p))
        .collect();
    let (req, scopes) = match PurgeApiRequest::parse(body, &tracking) {
        Ok(parsed) => parsed,
        Err(message) => {
            assert!(!message.is_empty(), "empty error message");
            return;
        }
    };

    let entries = req.urls.len() + req.tags.len() + req.prefixes.len();
    assert!(entries <= MAX_API_ENTRIES, "{entries} entries accepted");
    assert!(entries > 0 || req.all, "empty request accepted: {req:?}");
    assert_eq!(
        scopes.len(),
        entries + usize::from(req.all),
        "scopes {scopes:?} for {req:?}"
    );

    let mut it = scopes.iter();
    for url in &req.urls {
        let key = RequestKey::from_url(url, &tracking)
            .unwrap_or_else(|e| panic!("accepted URL {url:?} has no key: {e:?}"));
        assert_eq!(
            it.next(),
            Some(&PurgeScope::Url(key.primary_hash())),
            "URL {url:?}"
        );
    }
    for tag in &req.tags {
        assert!(
            !tag.is_empty() && tag.len() <= MAX_TAG_LEN && tag.bytes().all(|b| b.is_ascii_graphic()),
            "tag {tag:?} accepted"
        );
        assert_eq!(
            it.next(),
            Some(&PurgeScope::Tag(tag.clone())),
            "tag {tag:?}"
        );
    }
    for prefix in &req.prefixes {
        assert!(prefix.len() <= MAX_PREFIX_LEN, "a {}-byte prefix accepted", prefix.len());
        let Some(PurgeScope::Prefix(p)) = it.next() else {
            panic!("no prefix scope for {prefix:?}: {scopes:?}");
        };
        assert!(
            p.starts_with("http://") || p.starts_with("https://"),
            "prefix {prefix:?} -> {p:?}"
        );
        assert_eq!(
            normalize_prefix(p).as_deref(),
            Some(p.as_str()),
            "normalising prefix {prefix:?} -> {p:?} is not idempotent"
        );
    }
    if req.all {
        assert_eq!(it.next(), Some(&PurgeScope::All));
    }
    assert_eq!(it.next(), None);

    // round trip through JSON
    let text = reserialise(&req);
    let (again, again_scopes) = PurgeApiRequest::parse(&text, &tracking).unwrap_or_else(|e| {
        panic!(
            "re-serialised request rejected: {e}: {}",
            String::from_utf8_lossy(&text)
        )
    });
    assert_eq!(
        (
            &again.urls,
            &again.tags,
            &again.prefixes,
            again.all,
            again.soft
        ),
        (&req.urls, &req.tags, &req.prefixes, req.all, req.soft)
    );
    assert_eq!(again_scopes, scopes);
});
