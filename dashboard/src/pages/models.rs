//! Models: every trained model version per task (churn, lifetime value, segments,
//! recommendations) with its evaluation metrics next to its baselines' on the same
//! customers, why it is (or is not) active, the reliability curve of its churn
//! probabilities, when it was trained and on which data window. `?task=` narrows the
//! list to one task.

use domain::api::{ModelQuery, ModelStatus, ModelTask, ModelVersionView, Page};
use leptos::prelude::*;

use super::{href, query_param};
use crate::api;
use crate::charts::ReliabilityChart;
use crate::format;
use crate::widgets::{Badge, Empty, JsonBlock, Pager, loaded};

/// How people call a task.
fn task_label(t: ModelTask) -> &'static str {
    match t {
        ModelTask::Churn => "Churn",
        ModelTask::Ltv => "Lifetime value",
        ModelTask::Segment => "Segments",
        ModelTask::Recommend => "Recommendations",
    }
}

/// The metrics worth a column for a task, in the order shown.
pub fn headline_metrics(t: ModelTask) -> &'static [&'static str] {
    match t {
        ModelTask::Churn => &["roc_auc", "pr_auc", "brier", "f1"],
        ModelTask::Ltv => &["mae", "rmse", "r2"],
        ModelTask::Segment => &["silhouette", "inertia", "k"],
        ModelTask::Recommend => &["recall_at_10", "ndcg_at_10"],
    }
}

/// A metric value as shown: up to three decimals, large numbers compact.
pub fn metric(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 1000.0 => format::compact(x),
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => v.as_str().map(str::to_owned).unwrap_or_else(|| "—".into()),
    }
}

/// How people call a baseline.
fn baseline_label(name: &str) -> String {
    match name {
        "recency" => "Recency only".into(),
        "bgnbd" => "BG/NBD".into(),
        "bgnbd_gamma_gamma" => "BG/NBD × Gamma-Gamma".into(),
        "past_spend_rate" => "Past spend rate".into(),
        other => format::humanize(other),
    }
}

/// Each recorded baseline with its value of `metric`, as `(label, value)`.
pub fn baselines(metrics: &serde_json::Value, metric: &str) -> Vec<(String, String)> {
    metrics["baselines"]
        .as_object()
        .map(|b| {
            b.iter()
                .filter(|(_, m)| !m[metric].is_null())
                .map(|(name, m)| (baseline_label(name), self::metric(&m[metric])))
                .collect()
        })
        .unwrap_or_default()
}

/// The 95 % interval of a metric, when recorded (`[0.731, 0.780]`).
fn interval(metrics: &serde_json::Value, metric: &str) -> Option<String> {
    let ci = &metrics[format!("{metric}_ci")];
    Some(format!(
        "[{:.3}, {:.3}]",
        ci["low"].as_f64()?,
        ci["high"].as_f64()?
    ))
}

/// The reliability curve's bins: (predicted, observed, customers).
fn reliability_bins(metrics: &serde_json::Value) -> Vec<(f64, f64, u64)> {
    metrics["reliability"]
        .as_array()
        .map(|bins| {
            bins.iter()
                .filter_map(|b| {
                    Some((
                        b["predicted"].as_f64()?,
                        b["observed"].as_f64()?,
                        b["rows"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn status_tone(s: ModelStatus) -> &'static str {
    match s {
        ModelStatus::Active => "ok",
        ModelStatus::Candidate => "info",
        ModelStatus::Retired => "muted",
        ModelStatus::Rejected => "bad",
    }
}

/// The Models page (`/models`).
#[component]
pub fn Models() -> impl IntoView {
    let task = query_param("task");
    let cursor = query_param("cursor");
    let models = LocalResource::new(move || {
        let q = ModelQuery {
            task: task.get().and_then(|t| t.parse().ok()),
            cursor: cursor.get(),
            limit: Some(100),
            ..Default::default()
        };
        async move { api::get::<Page<ModelVersionView>>(&api::with_query("/models", &q)).await }
    });
    view! {
        <div class="page-head">
            <div>
                <h1>"Models"</h1>
                <p class="sub">
                    "A new version serves only when it beats chance and its baselines on customers it never saw (cross-fitted), and is at least as good as the active one; otherwise the best baseline serves, or nothing when there is too little data."
                </p>
            </div>
            <nav class="segmented" aria-label="Task">
                <a href="/models" aria-current=move || task.get().is_none().then_some("page")>"All"</a>
                {ModelTask::ALL.into_iter().map(|t| view! {
                    <a href=href("/models", &[("task", Some(t.as_str().to_owned()))]) aria-current=move || (task.get().as_deref() == Some(t.as_str())).then_some("page")>
                        {task_label(t)}
                    </a>
                }).collect_view()}
            </nav>
        </div>
        {loaded(models, move |page: Page<ModelVersionView>| {
            if page.items.is_empty() {
                return view! {
                    <Empty
                        title="No models trained yet"
                        hint="Models are trained from the events and orders collected so far (ctl ml train, or on the schedule); their versions and metrics appear here.".into()
                    />
                }.into_any();
            }
            let next_href = page.next_cursor.clone().map(|c| href("/models", &[("task", task.get()), ("cursor", Some(c))]));
            let first_href = href("/models", &[("task", task.get())]);
            view! {
                {ModelTask::ALL.into_iter().filter_map(|t| {
                    let versions: Vec<ModelVersionView> = page.items.iter().filter(|m| m.task == t).cloned().collect();
                    (!versions.is_empty()).then(|| view! { <TaskModels task=t versions/> })
                }).collect_view()}
                <Pager on_later_page=cursor.get().is_some() first_href next_href/>
            }.into_any()
        })}
    }
}

#[component]
fn TaskModels(task: ModelTask, versions: Vec<ModelVersionView>) -> impl IntoView {
    let metrics = headline_metrics(task);
    // The metric that decides activation, and the baselines it is compared with.
    let main = task.main_metric();
    // The newest churn version with a reliability curve: the active one if it has one.
    let calibrated = versions
        .iter()
        .filter(|v| !reliability_bins(&v.metrics).is_empty())
        .min_by_key(|v| v.status != ModelStatus::Active)
        .cloned();
    view! {
        <section class="card table-wrap" data-task=task.as_str()>
            <h2>{task_label(task)}</h2>
            <table class="table compact">
                <thead>
                    <tr>
                        <th>"Trained"</th>
                        <th>"Status"</th>
                        <th>"Algorithm"</th>
                        <th class="hide-phone">"Data window"</th>
                        <th class="num hide-phone">"Train / test rows"</th>
                        {metrics.iter().map(|m| view! { <th class="num">{format::humanize(m)}</th> }).collect_view()}
                        <th>{format!("Baselines ({})", format::humanize(main))}</th>
                        <th>"Why"</th>
                        <th></th>
                    </tr>
                </thead>
                <tbody>
                    {versions.into_iter().map(|v| {
                        let window = match (v.data_window_start, v.data_window_end) {
                            (Some(a), Some(b)) => format!("{} → {}", format::date(a), format::date(b)),
                            _ => "—".into(),
                        };
                        let compared = baselines(&v.metrics, main);
                        let reason = v.status_reason.clone().unwrap_or_else(|| "—".into());
                        let reason_class = if v.status == ModelStatus::Rejected { "model-reason why-rejected" } else { "model-reason" };
                        let main_ci = interval(&v.metrics, main);
                        // LTV: which forecast serves (expected or median spend).
                        let head = v.params["head"].as_str().map(str::to_owned);
                        let algorithm = match &head {
                            Some(h) => format!("{} ({h} spend)", v.algorithm),
                            None => v.algorithm.clone(),
                        };
                        view! {
                            <tr data-status=v.status.as_str() data-algorithm=v.algorithm.clone()>
                                <td>{format::datetime(v.created_at)}</td>
                                <td><Badge text=v.status.as_str() tone=status_tone(v.status)/></td>
                                <td data-head=head.clone()>{algorithm}</td>
                                <td class="hide-phone">{window}</td>
                                <td class="num hide-phone">{format!("{} / {}", format::count(v.train_rows.into()), format::count(v.test_rows.into()))}</td>
                                {metrics.iter().map(|m| {
                                    let title = (*m == main).then(|| main_ci.clone()).flatten().map(|ci| format!("95 % interval {ci}"));
                                    view! { <td class="num" title=title>{metric(v.metrics.get(*m).unwrap_or(&serde_json::Value::Null))}</td> }
                                }).collect_view()}
                                <td class="baselines" data-baselines>
                                    {if compared.is_empty() {
                                        "—".to_owned()
                                    } else {
                                        compared.iter().map(|(name, value)| format!("{name} {value}")).collect::<Vec<_>>().join(" · ")
                                    }}
                                </td>
                                <td class=reason_class data-reason>{reason}</td>
                                <td>
                                    <details>
                                        <summary>"Details"</summary>
                                        <h3>"Metrics"</h3>
                                        <JsonBlock value=v.metrics.clone()/>
                                        <h3>"Parameters"</h3>
                                        <JsonBlock value=v.params.clone()/>
                                    </details>
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            {calibrated.map(|v| {
                let bins = reliability_bins(&v.metrics);
                let brier = metric(&v.metrics["brier"]);
                let raw = metric(&v.metrics["brier_uncalibrated"]);
                view! {
                    <div class="calibration" data-reliability=v.id.to_string()>
                        <ReliabilityChart label="Reliability: predicted against observed churn".into() bins/>
                        <p class="muted">
                            {format!(
                                "Reliability of the {} version trained {}: each dot is a group of customers (cross-fitted, so none was scored by a model that saw them); on the dashed diagonal, \"37 %\" churns 37 % of the time. Brier score {brier} calibrated, {raw} before calibration (lower is better).",
                                v.status.as_str(),
                                format::datetime(v.created_at)
                            )}
                        </p>
                    </div>
                }
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_read_well() {
        assert_eq!(metric(&json!(0.81234)), "0.812");
        assert_eq!(metric(&json!(4)), "4");
        assert_eq!(metric(&json!(123456.7)), "123k");
        assert_eq!(metric(&json!(null)), "—");
        assert_eq!(metric(&json!("n/a")), "n/a");
        assert!(headline_metrics(ModelTask::Churn).contains(&"roc_auc"));
        let m = json!({"roc_auc": 0.8, "roc_auc_ci": {"low": 0.78, "high": 0.82},
                       "baselines": {"recency": {"roc_auc": 0.765}, "bgnbd": {"roc_auc": 0.7694}}});
        assert_eq!(
            baselines(&m, "roc_auc"),
            [
                ("BG/NBD".to_owned(), "0.769".to_owned()),
                ("Recency only".to_owned(), "0.765".to_owned())
            ]
        );
        assert_eq!(interval(&m, "roc_auc").as_deref(), Some("[0.780, 0.820]"));
        assert!(baselines(&json!({}), "roc_auc").is_empty());
    }
}
