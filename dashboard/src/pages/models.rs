//! Models: every trained model version per task (churn, lifetime value, segments,
//! recommendations) with its evaluation metrics, which one is active, when it was
//! trained and on which data window. `?task=` narrows the list to one task.

use domain::api::{ModelQuery, ModelStatus, ModelTask, ModelVersionView, Page};
use leptos::prelude::*;

use super::{href, query_param};
use crate::api;
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
        ModelTask::Churn => &["roc_auc", "f1", "precision", "recall", "accuracy"],
        ModelTask::Ltv => &["rmse", "mae", "r2", "mape"],
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
                <p class="sub">"A new version serves only when it is at least as good as the active one."</p>
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
                        <th></th>
                    </tr>
                </thead>
                <tbody>
                    {versions.into_iter().map(|v| {
                        let window = match (v.data_window_start, v.data_window_end) {
                            (Some(a), Some(b)) => format!("{} → {}", format::date(a), format::date(b)),
                            _ => "—".into(),
                        };
                        view! {
                            <tr data-status=v.status.as_str()>
                                <td>{format::datetime(v.created_at)}</td>
                                <td><Badge text=v.status.as_str() tone=status_tone(v.status)/></td>
                                <td>{v.algorithm.clone()}</td>
                                <td class="hide-phone">{window}</td>
                                <td class="num hide-phone">{format!("{} / {}", format::count(v.train_rows.into()), format::count(v.test_rows.into()))}</td>
                                {metrics.iter().map(|m| view! { <td class="num">{metric(v.metrics.get(*m).unwrap_or(&serde_json::Value::Null))}</td> }).collect_view()}
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
    }
}
