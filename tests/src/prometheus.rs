//! Metrics as Prometheus reads them: the text of a `/metrics` answer parsed by the reference
//! parser of the OpenMetrics text format (the `prometheus-client` Python package, installed by
//! `make pytools` into `vendor/python`), which refuses what Prometheus would refuse.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Parses with `prometheus_client.openmetrics.parser` and prints every family and sample as
/// JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]
    families.append({"name": family.name, "type": family.type, "unit": family.unit,
                     "samples": samples})
print(json.dumps(families))
"#;

/// One sample: a name, its labels and its value.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family: its name (without `_total` for a counter), type, unit and samples.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub samples: Vec<Sample>,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Family>);

impl Scrape {
    /// Parses `text`, panicking with the parser's reason if Prometheus could not read it.
    pub fn parse(text: &str) -> Scrape {
        let python = crate::reference::pytools_python();
        let mut child = Command::new(python)
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python starts");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("text written");
        drop(stdin);
        let output = child.wait_with_output().expect("python ends");
        assert!(
            output.status.success(),
            "the OpenMetrics parser refused the text: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        Scrape(serde_json::from_slice(&output.stdout).expect("the parser's JSON"))
    }

    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.0.iter().find(|family| family.name == name)
    }

    /// The value of sample `name` whose labels include `labels`; the sum when several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .flat_map(|family| &family.samples)
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|sample| sample.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }
}
