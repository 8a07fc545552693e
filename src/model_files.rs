//! Model files on disk: `run --model` loads them into the views' parameters, `train`
//! writes them.

use intentflow_dataflows::models::ModelFile;
use intentflow_dataflows::params::ViewParams;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads and checks one model file.
pub fn read(path: &Path) -> Result<ModelFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read model {}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("model {}: {error}", path.display()))
}

/// Writes a model file as pretty JSON.
pub fn write(path: &Path, model: &ModelFile) -> Result<(), String> {
    let text = serde_json::to_string_pretty(model).expect("models serialize");
    std::fs::write(path, text + "\n")
        .map_err(|error| format!("cannot write model {}: {error}", path.display()))
}

/// The models that enter the dataflow as collections (so refits can replace them), as JSON.
#[derive(Clone, Debug, Default)]
pub struct CollectionModels {
    pub kmeans: Option<String>,
    pub als: Option<String>,
}

/// Loads `--model` files: the propensity model into `params`; the k-means and ALS models
/// are returned as the JSON their views read. At most one model per kind.
pub fn load_into(paths: &[PathBuf], params: &mut ViewParams) -> Result<CollectionModels, String> {
    let mut loaded = CollectionModels::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let recency_days = params.windows.recency_days.clone();
    for path in paths {
        let model = read(path)?;
        let kind = model.kind();
        if seen.contains(&kind) {
            return Err(format!(
                "model {}: a {kind} model is already loaded; give one per kind",
                path.display()
            ));
        }
        seen.push(kind);
        let checked = |result: Result<(), String>| {
            result.map_err(|error| format!("model {}: {error}", path.display()))
        };
        match model {
            ModelFile::Kmeans(model) => {
                checked(model.check(&recency_days))?;
                loaded.kmeans = Some(serde_json::to_string(&model).expect("models serialize"));
            }
            ModelFile::Propensity(model) => {
                checked(model.check(&recency_days))?;
                params.propensity = Some(Arc::new(model));
            }
            ModelFile::Als(model) => {
                checked(model.check())?;
                loaded.als = Some(serde_json::to_string(&model).expect("models serialize"));
            }
        }
    }
    Ok(loaded)
}
