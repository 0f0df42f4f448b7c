//! What a partial says about itself: the Parquet metadata that `vizflow reduce` (and
//! later `plot` and `serve`) need to read a directory of partials without the pipeline
//! that made them: its group-by columns, each metric's expression, each bin column's
//! source column and width, the pipeline's text and hash, and the VizFlow version.
//! Also the listing of a directory's partials.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::calendar;
use crate::config::Pipeline;

/// The metadata key of the pipeline's hash (`vizflow run --skip-existing` compares it).
pub const CONFIG_HASH_KEY: &str = "vizflow.config_hash";
/// The metadata key of the VizFlow version that wrote the partial.
pub const VERSION_KEY: &str = "vizflow.version";
/// The metadata key of the group-by columns (a JSON array of names).
pub const GROUP_BY_KEY: &str = "vizflow.group_by";
/// The metadata key of the metrics (a JSON array of `[name, expression]`).
pub const METRICS_KEY: &str = "vizflow.metrics";
/// The metadata key of the bin columns (a JSON array of `{column, source, width}`).
pub const BINS_KEY: &str = "vizflow.bins";
/// The metadata key of the pipeline's TOML text.
pub const PIPELINE_KEY: &str = "vizflow.pipeline";

/// A bin column of the partials: `column` (e.g. `alpha1_bin`) holds the bin index of
/// `source` (e.g. `alpha1`) at `width`: the bin `k` is centred on `k * width`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bin {
    /// The bin column.
    pub column: String,
    /// The column binned.
    pub source: String,
    /// The bin width, in the source's units.
    pub width: f64,
}

/// What the partials of a pipeline hold (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    /// The pipeline's hash.
    pub config_hash: String,
    /// The VizFlow version that wrote them.
    pub version: String,
    /// The group-by columns.
    pub group_by: Vec<String>,
    /// `(name, expression)` of each metric, in order.
    pub metrics: Vec<(String, String)>,
    /// The bin columns.
    pub bins: Vec<Bin>,
    /// The pipeline's TOML text.
    pub pipeline: String,
}

impl Layout {
    /// The layout of `pipeline`'s partials.
    pub fn of(pipeline: &Pipeline) -> Layout {
        Layout {
            config_hash: pipeline.config_hash(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            group_by: pipeline.aggregate.group_by.clone(),
            metrics: (pipeline.aggregate.metrics.iter())
                .map(|(name, metric)| (name.clone(), metric.text().to_owned()))
                .collect(),
            bins: (pipeline.bins.iter())
                .map(|bin| Bin {
                    column: bin.output(),
                    source: bin.column.clone(),
                    width: bin.width,
                })
                .collect(),
            pipeline: pipeline.source.clone(),
        }
    }

    /// The layout as Parquet key-value metadata.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let json = |value: serde_json::Value| value.to_string();
        vec![
            (CONFIG_HASH_KEY.to_owned(), self.config_hash.clone()),
            (VERSION_KEY.to_owned(), self.version.clone()),
            (
                GROUP_BY_KEY.to_owned(),
                json(serde_json::json!(self.group_by)),
            ),
            (
                METRICS_KEY.to_owned(),
                json(serde_json::json!(self.metrics)),
            ),
            (BINS_KEY.to_owned(), json(serde_json::json!(self.bins))),
            (PIPELINE_KEY.to_owned(), self.pipeline.clone()),
        ]
    }

    /// The layout a partial's metadata describes: `Ok(None)` for a partial written
    /// before partials described themselves (no group-by key), an error naming the key
    /// for one that does not parse.
    pub fn from_metadata(metadata: &[(String, String)]) -> Result<Option<Layout>, String> {
        let get = |key: &str| {
            metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let Some(group_by) = get(GROUP_BY_KEY) else {
            return Ok(None);
        };
        fn parse<T: serde::de::DeserializeOwned>(
            key: &str,
            text: Option<&str>,
        ) -> Result<T, String> {
            let text = text.ok_or_else(|| format!("its metadata lacks '{key}'"))?;
            serde_json::from_str(text)
                .map_err(|e| format!("its metadata '{key}' is not valid: {e}"))
        }
        Ok(Some(Layout {
            config_hash: get(CONFIG_HASH_KEY).unwrap_or_default().to_owned(),
            version: get(VERSION_KEY).unwrap_or_default().to_owned(),
            group_by: parse(GROUP_BY_KEY, Some(group_by))?,
            metrics: parse(METRICS_KEY, get(METRICS_KEY))?,
            bins: parse(BINS_KEY, get(BINS_KEY))?,
            pipeline: get(PIPELINE_KEY).unwrap_or_default().to_owned(),
        }))
    }
}

/// The final partials in `dir`, `{YYYYMMDD}.parquet`, in date order (provisional and
/// live files are not partials of a complete date).
pub fn list(dir: &Path) -> std::io::Result<Vec<(NaiveDate, PathBuf)>> {
    let mut partials: Vec<_> = (listing(dir)?.into_iter())
        .filter(|(_, _, live)| !live)
        .map(|(date, path, _)| (date, path))
        .collect();
    partials.sort();
    Ok(partials)
}

/// The partials in `dir` as [`list`] gives them, plus, for each date that has no final
/// partial, its provisional `{YYYYMMDD}.live.parquet` (a date `vizflow live` still has
/// open), in date order. [`is_live`] tells which is which.
pub fn list_with_live(dir: &Path) -> std::io::Result<Vec<(NaiveDate, PathBuf)>> {
    let mut all = listing(dir)?;
    // Final before live for each date, then one per date.
    all.sort_by_key(|(date, _, live)| (*date, *live));
    all.dedup_by_key(|(date, _, _)| *date);
    Ok(all
        .into_iter()
        .map(|(date, path, _)| (date, path))
        .collect())
}

/// Whether `path` is a provisional partial (`{YYYYMMDD}.live.parquet`).
pub fn is_live(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(LIVE_SUFFIX))
}

const LIVE_SUFFIX: &str = ".live.parquet";

/// Every `{YYYYMMDD}.parquet` and `{YYYYMMDD}.live.parquet` in `dir`, with whether it is
/// live.
fn listing(dir: &Path) -> std::io::Result<Vec<(NaiveDate, PathBuf, bool)>> {
    let mut partials = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let (stem, live) = match name.strip_suffix(LIVE_SUFFIX) {
            Some(stem) => (stem, true),
            None => match name.strip_suffix(".parquet") {
                Some(stem) => (stem, false),
                None => continue,
            },
        };
        if stem.len() == 8
            && stem.bytes().all(|b| b.is_ascii_digit())
            && let Ok(date) = calendar::parse_date(stem)
        {
            partials.push((date, path, live));
        }
    }
    Ok(partials)
}
