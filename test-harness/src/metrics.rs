//! Reading the metrics the replicas of a test registered.

use prometheus::Registry;

/// The sum of counter `name` over `registries`, over the series whose labels include every
/// pair of `labels` (all series when `labels` is empty).
pub fn counter(registries: &[Registry], name: &str, labels: &[(&str, &str)]) -> f64 {
    registries
        .iter()
        .flat_map(Registry::gather)
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}
