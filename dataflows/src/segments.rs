//! The `segments` view (seed 2a, 2b) and the per-segment content rules (seed 2c).
//!
//! A user's segment is the first rule segment whose conditions hold on their features,
//! else the nearest k-means centroid of the current model. The model is a collection, so
//! a refit is an update like any other: every user is re-scored against the new model,
//! and consolidation leaves output only for users whose segment changed. The `segments`
//! diffs are the persona-change stream: "u7 left browsers and joined buyers".

use crate::Time;
use crate::features::{FeatureSums, FeatureValue, UserFeatures};
use crate::model::{CatalogItem, ItemId, ItemKind, UserId};
use crate::models::{ModelCache, SegmentModel, SharedModel};
use crate::name::Name;
use crate::with_model::with_model;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A user's segment: its stable id and readable name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentAssignment {
    pub id: Name,
    pub name: Name,
}

/// `<` `<=` `>` `>=` `==` `!=`
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

/// `feature <op> number`, read on the feature's printed value (flags read as 0 or 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub feature: String,
    pub comparison: Comparison,
    pub value: f64,
}

impl Condition {
    fn holds(&self, values: &[(Cow<'static, str>, FeatureValue)]) -> bool {
        let Some(x) = values
            .iter()
            .find(|(name, _)| *name == self.feature)
            .map(|(_, value)| value.as_f64())
        else {
            return false;
        };
        match self.comparison {
            Comparison::Less => x < self.value,
            Comparison::LessOrEqual => x <= self.value,
            Comparison::Greater => x > self.value,
            Comparison::GreaterOrEqual => x >= self.value,
            Comparison::Equal => x == self.value,
            Comparison::NotEqual => x != self.value,
        }
    }
}

/// Conditions joined by `and`, as written in config: `"purchases >= 3 and active_7d == 1"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditions(pub Vec<Condition>);

impl FromStr for Conditions {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut conditions = Vec::new();
        for part in text.split(" and ") {
            let tokens: Vec<&str> = part.split_whitespace().collect();
            let [feature, op, value] = tokens[..] else {
                return Err(format!(
                    "{part:?} is not `feature <op> number` (op: < <= > >= == !=)"
                ));
            };
            let comparison = match op {
                "<" => Comparison::Less,
                "<=" => Comparison::LessOrEqual,
                ">" => Comparison::Greater,
                ">=" => Comparison::GreaterOrEqual,
                "==" => Comparison::Equal,
                "!=" => Comparison::NotEqual,
                _ => return Err(format!("unknown comparison {op:?} in {part:?}")),
            };
            let value = match value {
                "true" => 1.0,
                "false" => 0.0,
                number => number
                    .parse()
                    .map_err(|_| format!("{number:?} in {part:?} is not a number"))?,
            };
            conditions.push(Condition {
                feature: feature.to_string(),
                comparison,
                value,
            });
        }
        Ok(Conditions(conditions))
    }
}

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, condition) in self.0.iter().enumerate() {
            let op = match condition.comparison {
                Comparison::Less => "<",
                Comparison::LessOrEqual => "<=",
                Comparison::Greater => ">",
                Comparison::GreaterOrEqual => ">=",
                Comparison::Equal => "==",
                Comparison::NotEqual => "!=",
            };
            if index > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{} {op} {}", condition.feature, condition.value)?;
        }
        Ok(())
    }
}

/// A rule segment: users whose features satisfy `when` belong to it, before any k-means
/// segment is considered.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSegment {
    pub id: String,
    pub name: String,
    pub when: Conditions,
}

/// What content a segment is offered (seed 2c): catalog items of these kinds, optionally
/// only premium (or only non-premium) ones.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentRule {
    pub kinds: Vec<ItemKind>,
    pub premium: Option<bool>,
}

impl ContentRule {
    pub fn admits(&self, item: &CatalogItem) -> bool {
        self.kinds.contains(&item.kind) && self.premium.is_none_or(|p| p == item.premium)
    }
}

/// `[segments]` and `[rules]` of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentParams {
    /// Checked in order; the first that holds wins.
    pub rules: Vec<RuleSegment>,
    /// Segment id → name, overriding the names a model file carries.
    pub names: BTreeMap<String, String>,
    /// Segment name → the content its users are offered.
    pub content: BTreeMap<String, ContentRule>,
}

impl Default for SegmentParams {
    fn default() -> Self {
        use ItemKind::*;
        let rule = |kinds: &[ItemKind], premium: Option<bool>| ContentRule {
            kinds: kinds.to_vec(),
            premium,
        };
        let content = [
            ("buyers", rule(&[Product, Offer], Some(true))),
            ("researchers", rule(&[Article, Guide, Product], None)),
            ("browsers", rule(&[Guide, Article], None)),
            ("disengaged", rule(&[Offer], None)),
        ]
        .into_iter()
        .map(|(name, rule)| (name.to_string(), rule))
        .collect();
        SegmentParams {
            rules: Vec::new(),
            names: BTreeMap::new(),
            content,
        }
    }
}

impl SegmentParams {
    /// The segment of a user with `values`: the first matching rule, else the nearest
    /// centroid of `model`, named by config first.
    pub fn assign(
        &self,
        values: &[(Cow<'static, str>, FeatureValue)],
        model: &SegmentModel,
    ) -> Option<SegmentAssignment> {
        let (id, name) = match self
            .rules
            .iter()
            .find(|rule| rule.when.0.iter().all(|condition| condition.holds(values)))
        {
            Some(rule) => (rule.id.as_str(), rule.name.as_str()),
            None => {
                let segment = &model.segments[model.nearest(&model.transform.input(values))?];
                (segment.id.as_str(), segment.name.as_str())
            }
        };
        let name = self.names.get(id).map_or(name, String::as_str);
        Some(SegmentAssignment {
            id: id.into(),
            name: name.into(),
        })
    }
}

/// Maintains the `segments` view from the `features` view and the current k-means model
/// (JSON of a [`SegmentModel`]; normally one record, replaced on refit; none or an empty
/// model leaves only rule segments).
pub fn segments<'s>(
    features: UserFeatures<'s>,
    models: VecCollection<'s, Time, String>,
    params: &SegmentParams,
    recency_days: &[u64],
) -> VecCollection<'s, Time, (UserId, SegmentAssignment)> {
    let params = params.clone();
    // Named once: the rules and the model's transform read features by name.
    let names = FeatureSums::names(recency_days);
    // The runtime validated the model before inserting it; a text that does not parse cannot
    // come from it, and scoring against no segments is the safe reading.
    let mut parsed = ModelCache::new(|json| serde_json::from_str(json).unwrap_or_default());
    with_model(
        features,
        models.map(|json| SharedModel::new(&json)),
        "Segments",
        move |_user, sums, model| {
            let model = parsed.get(model);
            params.assign(&sums.named(&names), &model)
        },
    )
}

/// The content each segment is offered: (segment name, item) for every catalog item its
/// content rule admits. The recommendation blend reads this.
pub fn segment_candidates<'s>(
    catalog: VecCollection<'s, Time, CatalogItem>,
    params: &SegmentParams,
) -> VecCollection<'s, Time, (Name, ItemId)> {
    let content = params.content.clone();
    catalog.flat_map(move |entry| {
        content
            .iter()
            .filter(|(_, rule)| rule.admits(&entry))
            .map(|(segment, _)| (Name::new(segment), entry.item.clone()))
            .collect::<Vec<_>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureSums;
    use crate::model::{Category, Cents};
    use crate::models::{Centroid, FeatureScale, FeatureTransform};

    fn buyer_or_browser_model() -> SegmentModel {
        SegmentModel {
            transform: FeatureTransform {
                features: vec![FeatureScale {
                    feature: "purchases".into(),
                    log: false,
                    mean: 0.0,
                    std: 1.0,
                }],
            },
            segments: vec![
                Centroid {
                    id: "c0".into(),
                    name: "browsers".into(),
                    center: vec![0.0],
                },
                Centroid {
                    id: "c1".into(),
                    name: "buyers".into(),
                    center: vec![2.0],
                },
            ],
            ..Default::default()
        }
    }

    fn with_purchases(n: i32) -> Vec<(Cow<'static, str>, FeatureValue)> {
        FeatureSums {
            sessions: 1,
            purchases: n,
            ..Default::default()
        }
        .values(&[7])
    }

    #[test]
    fn rule_segments_win_over_the_nearest_centroid_and_config_renames() {
        let mut params = SegmentParams {
            rules: vec![RuleSegment {
                id: "vip".into(),
                name: "VIP".into(),
                when: "purchases >= 3 and active_7d == false".parse().unwrap(),
            }],
            ..SegmentParams::default()
        };
        let model = buyer_or_browser_model();
        let id = |n| params.assign(&with_purchases(n), &model).map(|a| a.id);
        assert_eq!(id(0).as_deref(), Some("c0"));
        assert_eq!(
            id(1).as_deref(),
            Some("c0"),
            "a tie goes to the lower index"
        );
        assert_eq!(id(2).as_deref(), Some("c1"));
        assert_eq!(id(3).as_deref(), Some("vip"));
        params.names.insert("c1".into(), "big spenders".into());
        let named = params.assign(&with_purchases(2), &model).unwrap();
        assert_eq!(named.name, "big spenders");
        // Without a model only rules assign.
        let empty = SegmentModel::default();
        assert_eq!(params.assign(&with_purchases(2), &empty), None);
        assert_eq!(params.assign(&with_purchases(5), &empty).unwrap().id, "vip");
    }

    #[test]
    fn conditions_parse_and_reject_what_they_cannot_read() {
        let parsed: Conditions = "purchases >= 3 and bounce_rate < 0.5".parse().unwrap();
        assert_eq!(parsed.to_string(), "purchases >= 3 and bounce_rate < 0.5");
        assert!(
            "purchases => 3"
                .parse::<Conditions>()
                .unwrap_err()
                .contains("=>")
        );
        assert!(
            "purchases >= lots"
                .parse::<Conditions>()
                .unwrap_err()
                .contains("lots")
        );
        assert!("purchases".parse::<Conditions>().is_err());
    }

    #[test]
    fn default_content_rules_follow_the_seed() {
        let item = |kind, premium| CatalogItem {
            item: ItemId::new("i"),
            category: Category::new("c"),
            kind,
            price: Cents(100),
            premium,
        };
        let admits = |segment: &str, kind, premium| {
            SegmentParams::default().content[segment].admits(&item(kind, premium))
        };
        assert!(admits("buyers", ItemKind::Product, true));
        assert!(admits("buyers", ItemKind::Offer, true));
        assert!(!admits("buyers", ItemKind::Product, false));
        assert!(admits("browsers", ItemKind::Guide, false));
        assert!(!admits("browsers", ItemKind::Product, false));
        assert!(admits("disengaged", ItemKind::Offer, false));
    }
}
