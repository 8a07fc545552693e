//! The config file (DESIGN.md §2): TOML, every key optional, defaults = the seed's numbers.
//! An unknown key or a bad value is an error that names it.

use intentflow_dataflows::model::{EventKind, Score};
use intentflow_dataflows::params::{SessionParams, ViewParams, Weights};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The full default config, with comments: what `intentflow config --print-defaults` prints.
pub const DEFAULT_CONFIG: &str = r#"# intentflow configuration. Every key is optional; the values below are the defaults.

[weights]
# Intent weight of one event of each type towards its (user, item) score.
# The seed's formula is click*1 + add_to_cart*3 + purchase*5; other explicit actions
# carry smaller weights; views, scrolls, impressions and exits count only through
# implicit feedback.
page_view = 0
click = 1
scroll = 0
video_play = 1
form_submit = 0
add_to_cart = 3
wishlist = 2
bookmark = 2
share = 2
comment = 1
purchase = 5
impression = 0
exit = 0
# Weights for event types the engine does not know (they count 0 unless named here),
# e.g. custom = { newsletter_signup = 2 }
custom = {}

[sessions]
# Events of a user that carry no client session id are split into sessions wherever two
# consecutive events are more than this many milliseconds apart (30 minutes).
inactivity_gap_ms = 1800000
"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    weights: WeightsTable,
    sessions: SessionsTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WeightsTable {
    page_view: Option<f64>,
    click: Option<f64>,
    scroll: Option<f64>,
    video_play: Option<f64>,
    form_submit: Option<f64>,
    add_to_cart: Option<f64>,
    wishlist: Option<f64>,
    bookmark: Option<f64>,
    share: Option<f64>,
    comment: Option<f64>,
    purchase: Option<f64>,
    impression: Option<f64>,
    exit: Option<f64>,
    custom: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SessionsTable {
    inactivity_gap_ms: Option<u64>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<ViewParams, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read config {}: {error}", path.display()))?;
    parse(&text).map_err(|error| format!("config {}: {error}", path.display()))
}

/// Parses config text; errors name the offending key.
pub fn parse(text: &str) -> Result<ViewParams, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|error| error.to_string())?;
    let mut params = ViewParams::default();
    apply_weights(&file.weights, &mut params.weights)?;
    if let Some(gap) = file.sessions.inactivity_gap_ms {
        if gap == 0 {
            return Err("sessions.inactivity_gap_ms must be positive".into());
        }
        params.sessions = SessionParams {
            inactivity_gap_ms: gap,
        };
    }
    Ok(params)
}

fn weight(key: &str, value: f64) -> Result<Score, String> {
    if value.is_finite() && value.abs() <= 1e9 {
        Ok(Score::from_f64(value))
    } else {
        Err(format!(
            "weights.{key} must be a finite number, got {value}"
        ))
    }
}

fn apply_weights(table: &WeightsTable, weights: &mut Weights) -> Result<(), String> {
    use EventKind::*;
    let known = [
        (PageView, table.page_view),
        (Click, table.click),
        (Scroll, table.scroll),
        (VideoPlay, table.video_play),
        (FormSubmit, table.form_submit),
        (AddToCart, table.add_to_cart),
        (Wishlist, table.wishlist),
        (Bookmark, table.bookmark),
        (Share, table.share),
        (Comment, table.comment),
        (Purchase, table.purchase),
        (Impression, table.impression),
        (Exit, table.exit),
    ];
    for (kind, value) in known {
        if let Some(value) = value {
            weights.set_known(kind, weight(kind.name(), value)?);
        }
    }
    for (name, value) in &table.custom {
        if EventKind::from_name(name) != EventKind::Other {
            return Err(format!(
                "weights.custom.{name}: {name} is a built-in type; set weights.{name} instead"
            ));
        }
        weights.set_custom(name, weight(&format!("custom.{name}"), *value)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_are_the_defaults() {
        assert_eq!(parse(DEFAULT_CONFIG).unwrap(), ViewParams::default());
        assert_eq!(parse("").unwrap(), ViewParams::default());
    }

    #[test]
    fn weights_override() {
        let params = parse("[weights]\nclick = 2.5\ncustom = { hover = 1 }\n").unwrap();
        assert_eq!(params.weights.known(EventKind::Click), Score(2500));
        assert_eq!(params.weights.custom()["hover"], Score(1000));
    }

    #[test]
    fn typos_are_errors_naming_the_key() {
        let error = parse("[weights]\nclikc = 2\n").unwrap_err();
        assert!(error.contains("clikc"), "{error}");
        let error = parse("[weigths]\nclick = 2\n").unwrap_err();
        assert!(error.contains("weigths"), "{error}");
        let error = parse("[weights]\nclick = \"two\"\n").unwrap_err();
        assert!(error.contains("click"), "{error}");
    }
}
