//! Automations: the list with enable/disable, a builder (trigger, wait, conditions with
//! the audience rule editor's starters, a WhatsApp or webhook action, guardrails) that
//! previews the message rendered for real members through the dry-run endpoint, one
//! automation with its dry run, and its results (the outcome funnel, what stopped
//! messages, conversions against the control group).
//!
//! Everything goes through `/api/v1/automations` (docs/automations.md): the builder
//! sends the same `AutomationSpec` the API validates, so the server's reason is shown
//! when a definition is wrong. Creating, changing and switching are for analysts and
//! admins.

use domain::EventType;
use domain::api::{
    AudienceView, AutomationEnable, AutomationResults, AutomationView, ChurnBand, DryRun,
    DryRunRequest, Page, RenderedMessage, Role,
};
use domain::audience::EventMatch;
use domain::automation::{
    Action, AutomationSpec, Guardrails, QuietHours, Trigger, Wait, WhatsappMessage,
};
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};

use super::audiences::{STARTERS, parse_rule};
use super::{href, query_param};
use crate::api::{self, ApiError};
use crate::charts::HBars;
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, Empty, ErrorNotice, Kpi, Pager, loaded};

/// The Automations page (`/automations`): every automation with its switch.
#[component]
pub fn Automations() -> impl IntoView {
    let session = use_session();
    let cursor = query_param("cursor");
    let list = LocalResource::new(move || {
        let c = cursor.get();
        async move { api::get::<Page<AutomationView>>(&href("/automations", &[("cursor", c)])).await }
    });
    let error = RwSignal::new(None::<ApiError>);
    view! {
        <div class="page-head">
            <div>
                <h1>"Automations"</h1>
                <p class="sub">"Trigger → wait → conditions → message, with consent, caps, quiet hours and a control group enforced by the server."</p>
            </div>
            <Show when=move || session.can(Role::Analyst)>
                <a class="button" href="/automations/new">"New automation"</a>
            </Show>
        </div>
        {move || error.get().map(|error| view! { <ErrorNotice error/> })}
        {loaded(list, move |page: Page<AutomationView>| {
            if page.items.is_empty() {
                return view! {
                    <Empty
                        title="No automations yet"
                        hint="An automation reacts to what a customer does (an abandoned checkout, a rising churn risk, joining an audience) with a WhatsApp message or a webhook.".into()
                    />
                }.into_any();
            }
            let next_href = page.next_cursor.clone().map(|c| href("/automations", &[("cursor", Some(c))]));
            let can_switch = session.can(Role::Analyst);
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="automations">
                        <thead><tr><th>"Name"</th><th>"Trigger"</th><th class="hide-phone">"Actions"</th><th>"State"</th><th></th></tr></thead>
                        <tbody>
                            {page.items.into_iter().map(|a| view! {
                                <AutomationRow a can_switch on_error=move |e| error.set(Some(e))/>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page=cursor.get().is_some() first_href="/automations".into() next_href/>
                </div>
            }.into_any()
        })}
    }
}

/// One row of the list, with its own enabled state so the switch answers at once.
#[component]
fn AutomationRow(
    a: AutomationView,
    can_switch: bool,
    on_error: impl Fn(ApiError) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let enabled = RwSignal::new(a.enabled);
    let busy = RwSignal::new(false);
    let id = a.id;
    let toggle = move |_| {
        let to = !enabled.get_untracked();
        busy.set(true);
        leptos::task::spawn_local(async move {
            match switch(id, to).await {
                Ok(v) => enabled.set(v.enabled),
                Err(e) => on_error(e),
            }
            busy.set(false);
        });
    };
    view! {
        <tr data-automation=a.spec.name.clone()>
            <td><a href=format!("/automations/{id}")>{a.spec.name.clone()}</a></td>
            <td>{trigger_text(&a.spec.trigger)}</td>
            <td class="hide-phone">{a.spec.actions.iter().map(action_text).collect::<Vec<_>>().join(", ")}</td>
            <td data-testid="state">{move || if enabled.get() { view! { <Badge text="enabled" tone="ok"/> } } else { view! { <Badge text="disabled"/> } }}</td>
            <td>{can_switch.then(|| view! {
                <button type="button" class="button small ghost" disabled=move || busy.get() on:click=toggle>
                    {move || if enabled.get() { "Disable" } else { "Enable" }}
                </button>
            })}</td>
        </tr>
    }
}

/// `POST /automations/{id}/enabled`.
async fn switch(id: uuid_js::Uuid, enabled: bool) -> Result<AutomationView, ApiError> {
    api::post::<_, AutomationView>(
        &format!("/automations/{id}/enabled"),
        &AutomationEnable { enabled },
    )
    .await
}

/// A trigger in words.
pub fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::AudienceEntered { .. } => "Enters an audience".into(),
        Trigger::Event { event } => match &event.name {
            Some(n) => format!("Event {n}"),
            None => format!("Event {}", format::humanize(event.event_type.as_str())),
        },
        Trigger::ChurnLabelBecame { label } => {
            format!("Churn risk becomes {}", label.as_str())
        }
        Trigger::Schedule { at, .. } => format!("Daily at {at}"),
    }
}

/// An action in words.
pub fn action_text(a: &Action) -> String {
    match a {
        Action::Whatsapp(_) => "WhatsApp message".into(),
        Action::Webhook { .. } => "Webhook".into(),
        Action::AddToList { list } => format!("Add to list {list}"),
        Action::RemoveFromList { list } => format!("Remove from list {list}"),
    }
}

/// A wait in words.
pub fn wait_text(w: Option<&Wait>) -> String {
    match w {
        None => "No wait".into(),
        Some(Wait::Delay { seconds }) => format!("Wait {}", duration_text(*seconds)),
        Some(Wait::UntilEvent {
            event,
            timeout_seconds,
        }) => format!(
            "Wait {} unless {} happens",
            duration_text(*timeout_seconds),
            format::humanize(event.event_type.as_str())
        ),
    }
}

fn duration_text(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3_600 == 0 => format!("{} hour(s)", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// What the builder's fields hold, as plain values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `event`, `audience_entered`, `churn_label_became` or `schedule`.
    pub trigger: String,
    /// Event type of an event trigger.
    pub event_type: String,
    /// Source's event name of an event trigger (optional).
    pub event_name: String,
    /// Audience of an audience or schedule trigger.
    pub audience_id: String,
    /// Churn label.
    pub churn_label: String,
    /// `HH:MM` of a schedule.
    pub at: String,
    /// `none`, `delay` or `until_event`.
    pub wait: String,
    /// Minutes of the wait.
    pub wait_minutes: String,
    /// Event type that ends an `until_event` wait.
    pub until_event: String,
    /// Conditions as rule JSON (blank: none).
    pub conditions: String,
    /// `whatsapp` or `webhook`.
    pub action: String,
    /// Free-form WhatsApp body.
    pub body: String,
    /// Template SID.
    pub content_sid: String,
    /// Webhook URL.
    pub url: String,
    /// `hold` or `skip`.
    pub quiet_hours: String,
    /// Control group percent.
    pub control_percent: String,
    /// Conversion window hours.
    pub conversion_hours: String,
}

impl Draft {
    /// The abandoned-checkout reminder, the builder's starting point.
    pub fn starter() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            trigger: "event".into(),
            event_type: "checkout_started".into(),
            event_name: String::new(),
            audience_id: String::new(),
            churn_label: "high".into(),
            at: "10:00".into(),
            wait: "until_event".into(),
            wait_minutes: "60".into(),
            until_event: "order_placed".into(),
            conditions: r#"{"consent": "whatsapp"}"#.into(),
            action: "whatsapp".into(),
            body:
                "Hi {{first_name}}, your cart is waiting: {{cart_contents}}. Reply STOP to opt out."
                    .into(),
            content_sid: String::new(),
            url: String::new(),
            quiet_hours: "hold".into(),
            control_percent: "10".into(),
            conversion_hours: "72".into(),
        }
    }

    /// The definition, or what is wrong with the fields (the server checks the rest).
    pub fn spec(&self) -> Result<AutomationSpec, String> {
        let event_type = |v: &str, what: &str| {
            v.parse::<EventType>()
                .map_err(|_| format!("Choose the {what} event."))
        };
        let audience = || {
            self.audience_id
                .parse::<uuid_js::Uuid>()
                .map_err(|_| "Choose an audience.".to_owned())
        };
        let trigger = match self.trigger.as_str() {
            "event" => Trigger::Event {
                event: EventMatch {
                    event_type: event_type(&self.event_type, "trigger")?,
                    name: Some(self.event_name.trim().to_owned()).filter(|n| !n.is_empty()),
                    conditions: Vec::new(),
                },
            },
            "audience_entered" => Trigger::AudienceEntered {
                audience_id: audience()?,
            },
            "churn_label_became" => Trigger::ChurnLabelBecame {
                label: ChurnBand::ALL
                    .into_iter()
                    .find(|b| b.as_str() == self.churn_label)
                    .ok_or("Choose a churn label.")?,
            },
            "schedule" => Trigger::Schedule {
                audience_id: audience()?,
                at: self.at.trim().to_owned(),
            },
            _ => return Err("Choose a trigger.".into()),
        };
        let minutes = || {
            self.wait_minutes
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|m| *m > 0)
                .map(|m| m * 60)
                .ok_or_else(|| "The wait is a whole number of minutes.".to_owned())
        };
        let wait = match self.wait.as_str() {
            "delay" => Some(Wait::Delay {
                seconds: minutes()?,
            }),
            "until_event" => Some(Wait::UntilEvent {
                event: EventMatch {
                    event_type: event_type(&self.until_event, "wait's")?,
                    name: None,
                    conditions: Vec::new(),
                },
                timeout_seconds: minutes()?,
            }),
            _ => None,
        };
        let conditions = match self.conditions.trim() {
            "" => None,
            text => Some(parse_rule(text)?),
        };
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let action = match self.action.as_str() {
            "webhook" => Action::Webhook {
                url: self.url.trim().to_owned(),
            },
            _ => Action::Whatsapp(WhatsappMessage {
                body: some(&self.body),
                content_sid: some(&self.content_sid),
                content_variables: Default::default(),
            }),
        };
        let number = |s: &str, what: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} is a whole number."))
        };
        Ok(AutomationSpec {
            name: self.name.trim().to_owned(),
            description: self.description.trim().to_owned(),
            trigger,
            wait,
            conditions,
            actions: vec![action],
            guardrails: Guardrails {
                quiet_hours: if self.quiet_hours == "skip" {
                    QuietHours::Skip
                } else {
                    QuietHours::Hold
                },
                max_sends_per_minute: None,
                control_percent: u8::try_from(number(&self.control_percent, "The control group")?)
                    .map_err(|_| "The control group is a percentage.".to_owned())?,
                conversion_window_hours: number(&self.conversion_hours, "The conversion window")?,
            },
        })
    }
}

/// The builder's fields, one signal each.
#[derive(Clone, Copy)]
struct Fields {
    name: RwSignal<String>,
    description: RwSignal<String>,
    trigger: RwSignal<String>,
    event_type: RwSignal<String>,
    event_name: RwSignal<String>,
    audience_id: RwSignal<String>,
    churn_label: RwSignal<String>,
    at: RwSignal<String>,
    wait: RwSignal<String>,
    wait_minutes: RwSignal<String>,
    until_event: RwSignal<String>,
    conditions: RwSignal<String>,
    action: RwSignal<String>,
    body: RwSignal<String>,
    content_sid: RwSignal<String>,
    url: RwSignal<String>,
    quiet_hours: RwSignal<String>,
    control_percent: RwSignal<String>,
    conversion_hours: RwSignal<String>,
}

impl Fields {
    fn new(d: Draft) -> Self {
        Self {
            name: RwSignal::new(d.name),
            description: RwSignal::new(d.description),
            trigger: RwSignal::new(d.trigger),
            event_type: RwSignal::new(d.event_type),
            event_name: RwSignal::new(d.event_name),
            audience_id: RwSignal::new(d.audience_id),
            churn_label: RwSignal::new(d.churn_label),
            at: RwSignal::new(d.at),
            wait: RwSignal::new(d.wait),
            wait_minutes: RwSignal::new(d.wait_minutes),
            until_event: RwSignal::new(d.until_event),
            conditions: RwSignal::new(d.conditions),
            action: RwSignal::new(d.action),
            body: RwSignal::new(d.body),
            content_sid: RwSignal::new(d.content_sid),
            url: RwSignal::new(d.url),
            quiet_hours: RwSignal::new(d.quiet_hours),
            control_percent: RwSignal::new(d.control_percent),
            conversion_hours: RwSignal::new(d.conversion_hours),
        }
    }

    fn draft(&self) -> Draft {
        Draft {
            name: self.name.get_untracked(),
            description: self.description.get_untracked(),
            trigger: self.trigger.get_untracked(),
            event_type: self.event_type.get_untracked(),
            event_name: self.event_name.get_untracked(),
            audience_id: self.audience_id.get_untracked(),
            churn_label: self.churn_label.get_untracked(),
            at: self.at.get_untracked(),
            wait: self.wait.get_untracked(),
            wait_minutes: self.wait_minutes.get_untracked(),
            until_event: self.until_event.get_untracked(),
            conditions: self.conditions.get_untracked(),
            action: self.action.get_untracked(),
            body: self.body.get_untracked(),
            content_sid: self.content_sid.get_untracked(),
            url: self.url.get_untracked(),
            quiet_hours: self.quiet_hours.get_untracked(),
            control_percent: self.control_percent.get_untracked(),
            conversion_hours: self.conversion_hours.get_untracked(),
        }
    }
}

/// `<option>`s of every event type, `selected` chosen.
fn event_options(selected: String) -> impl IntoView {
    EventType::ALL
        .into_iter()
        .map(|t| {
            let v = t.as_str();
            view! { <option value=v selected=selected == v>{format::humanize(v)}</option> }
        })
        .collect_view()
}

/// The builder (`/automations/new`).
#[component]
pub fn AutomationBuilder() -> impl IntoView {
    let navigate = use_navigate();
    let f = Fields::new(Draft::starter());
    let audiences = LocalResource::new(|| async {
        api::get::<Page<AudienceView>>("/audiences?limit=200").await
    });
    let preview = RwSignal::new(None::<Result<DryRun, String>>);
    let previewing = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);

    let run_preview = move |_| {
        let spec = match f.draft().spec() {
            Ok(s) => s,
            Err(m) => {
                preview.set(Some(Err(m)));
                return;
            }
        };
        previewing.set(true);
        leptos::task::spawn_local(async move {
            let body = DryRunRequest {
                spec: Some(spec),
                profile_id: None,
                limit: Some(5),
            };
            let result = api::post::<_, DryRun>("/automations/dry-run", &body)
                .await
                .map_err(|e| e.to_string());
            preview.set(Some(result));
            previewing.set(false);
        });
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let spec = match f.draft().spec() {
            Ok(s) => s,
            Err(message) => {
                error.set(Some(ApiError::Status {
                    status: 400,
                    code: "invalid_automation".into(),
                    message,
                }));
                return;
            }
        };
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::post::<_, AutomationView>("/automations", &spec).await {
                Ok(a) => navigate(&format!("/automations/{}", a.id), Default::default()),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let trigger_is = move |kinds: &'static [&'static str]| {
        move || f.trigger.with(|t| kinds.contains(&t.as_str()))
    };

    view! {
        <div class="page-head">
            <div>
                <a href="/automations">"← Automations"</a>
                <h1>"New automation"</h1>
            </div>
        </div>
        <form class="card stack" on:submit=submit data-testid="automation-builder">
            <div class="filters">
                <label class="search">"Name" <input type="text" required maxlength="200" placeholder="e.g. Abandoned checkout reminder" bind:value=f.name data-testid="name"/></label>
                <label class="search">"Description" <input type="text" maxlength="2000" bind:value=f.description/></label>
            </div>

            <h2>"1. Trigger"</h2>
            <div class="filters">
                <label>
                    "Starts when"
                    <select data-testid="trigger" on:change=move |ev| f.trigger.set(event_target_value(&ev)) prop:value=move || f.trigger.get()>
                        <option value="event">"An event happens"</option>
                        <option value="audience_entered">"Someone enters an audience"</option>
                        <option value="churn_label_became">"Churn risk changes"</option>
                        <option value="schedule">"Every day, for an audience"</option>
                    </select>
                </label>
                <Show when=trigger_is(&["event"])>
                    <label>"Event" <select data-testid="event-type" on:change=move |ev| f.event_type.set(event_target_value(&ev))>{event_options(f.event_type.get_untracked())}</select></label>
                    <label>"Named (optional)" <input type="text" placeholder="Checkout Started" bind:value=f.event_name/></label>
                </Show>
                <Show when=trigger_is(&["audience_entered", "schedule"])>
                    <label>
                        "Audience"
                        <select data-testid="audience" on:change=move |ev| f.audience_id.set(event_target_value(&ev))>
                            <option value="">"Choose…"</option>
                            {move || audiences.get().and_then(Result::ok).map(|page| page.items.into_iter().map(|a| {
                                let id = a.id.to_string();
                                let selected = f.audience_id.get_untracked() == id;
                                view! { <option value=id selected=selected>{a.name}</option> }
                            }).collect_view())}
                        </select>
                    </label>
                </Show>
                <Show when=trigger_is(&["schedule"])>
                    <label>"At (brand time)" <input type="time" bind:value=f.at/></label>
                </Show>
                <Show when=trigger_is(&["churn_label_became"])>
                    <label>"Becomes" <select on:change=move |ev| f.churn_label.set(event_target_value(&ev))>
                        {ChurnBand::ALL.into_iter().map(|b| view! { <option value=b.as_str() selected=f.churn_label.get_untracked() == b.as_str()>{format::humanize(b.as_str())}</option> }).collect_view()}
                    </select></label>
                </Show>
            </div>

            <h2>"2. Wait"</h2>
            <div class="filters">
                <label>
                    "Then"
                    <select data-testid="wait" on:change=move |ev| f.wait.set(event_target_value(&ev)) prop:value=move || f.wait.get()>
                        <option value="none">"Act at once"</option>
                        <option value="delay">"Wait a while"</option>
                        <option value="until_event">"Wait, unless an event happens first"</option>
                    </select>
                </label>
                <Show when=move || f.wait.with(|w| w != "none")>
                    <label>"Minutes" <input type="number" min="1" bind:value=f.wait_minutes data-testid="wait-minutes"/></label>
                </Show>
                <Show when=move || f.wait.with(|w| w == "until_event")>
                    <label>"Unless" <select on:change=move |ev| f.until_event.set(event_target_value(&ev))>{event_options(f.until_event.get_untracked())}</select></label>
                </Show>
            </div>

            <h2>"3. Conditions"</h2>
            <div class="row">
                <small>"Start from:"</small>
                <button type="button" class="button small ghost" on:click=move |_| f.conditions.set(String::new())>"None"</button>
                {STARTERS.into_iter().map(|(label, json)| view! {
                    <button type="button" class="button small ghost" on:click=move |_| f.conditions.set(json.to_owned())>{label}</button>
                }).collect_view()}
            </div>
            <label>
                "Judged after the wait (an audience rule as JSON; blank: always)"
                <textarea rows="4" class="mono" spellcheck="false" data-testid="conditions" bind:value=f.conditions></textarea>
            </label>

            <h2>"4. Action"</h2>
            <div class="filters">
                <label>"Do" <select data-testid="action" on:change=move |ev| f.action.set(event_target_value(&ev)) prop:value=move || f.action.get()>
                    <option value="whatsapp">"Send a WhatsApp message"</option>
                    <option value="webhook">"Call a webhook"</option>
                </select></label>
            </div>
            <Show when=move || f.action.with(|a| a == "whatsapp")>
                <label>
                    "Message (inside the 24-hour window; placeholders {{first_name}}, {{last_viewed_product}}, {{recommended_products}}, {{cart_contents}})"
                    <textarea rows="3" bind:value=f.body data-testid="body"></textarea>
                </label>
                <label>"Approved template SID for outside the window (HX…, optional)" <input type="text" bind:value=f.content_sid/></label>
            </Show>
            <Show when=move || f.action.with(|a| a == "webhook")>
                <label>"URL" <input type="url" bind:value=f.url placeholder="https://hooks.example.com/constintel"/></label>
            </Show>

            <h2>"5. Guardrails"</h2>
            <div class="filters">
                <label>"In quiet hours" <select on:change=move |ev| f.quiet_hours.set(event_target_value(&ev)) prop:value=move || f.quiet_hours.get()>
                    <option value="hold">"Hold until they end"</option>
                    <option value="skip">"Skip"</option>
                </select></label>
                <label>"Control group (%)" <input type="number" min="0" max="50" bind:value=f.control_percent data-testid="control"/></label>
                <label>"Conversion window (hours)" <input type="number" min="1" max="720" bind:value=f.conversion_hours/></label>
            </div>
            <p class="muted">"Consent, erased and suppressed people, frequency caps and quiet hours are enforced by the server for every message."</p>

            <div class="row">
                <button type="button" class="button ghost" on:click=run_preview disabled=move || previewing.get() data-testid="preview">"Preview for members"</button>
            </div>
            <div aria-live="polite" data-testid="preview-result">
                {move || preview.get().map(|p| match p {
                    Err(message) => view! { <p class="notice warn">{message}</p> }.into_any(),
                    Ok(run) => view! { <DryRunTable run/> }.into_any(),
                })}
            </div>
            {move || error.get().map(|error| view! { <ErrorNotice error/> })}
            <div class="row">
                <button type="submit" class="button" disabled=move || busy.get()>"Save (disabled)"</button>
                <a class="button ghost" href="/automations">"Cancel"</a>
            </div>
        </form>
    }
}

/// Who a dry run reaches and what each would get.
#[component]
fn DryRunTable(run: DryRun) -> impl IntoView {
    view! {
        <p data-testid="candidates">{format!("{} people match the trigger now; the first {} judged:", format::count(run.candidates), run.items.len())}</p>
        {if run.items.is_empty() {
            view! { <p class="muted">"Nobody to judge right now."</p> }.into_any()
        } else {
            view! {
                <table class="table compact" data-testid="dry-run">
                    <thead><tr><th>"Customer"</th><th>"Outcome"</th><th>"Would get"</th></tr></thead>
                    <tbody>
                        {run.items.into_iter().map(|item| view! {
                            <tr data-outcome=item.outcome.as_str()>
                                <td><a href=format!("/profiles/{}", item.profile_id)>{item.display_name.clone().unwrap_or_else(|| item.profile_id.to_string())}</a></td>
                                <td><Badge text=format::humanize(item.outcome.as_str()) tone=if item.outcome.as_str() == "acted" { "ok" } else { "muted" }/></td>
                                <td>
                                    {item.actions.into_iter().map(|a| view! {
                                        <div data-status=a.status.as_str()>
                                            <Badge text=format::humanize(a.status.as_str()) tone=if a.status.as_str() == "queued" { "ok" } else { "warn" }/>
                                            {a.detail.map(|d| view! { " " <small>{d}</small> })}
                                            {a.rendered.map(|r| view! { <Rendered r/> })}
                                        </div>
                                    }).collect_view()}
                                </td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
    }
}

/// A message as it would be sent.
#[component]
fn Rendered(r: RenderedMessage) -> impl IntoView {
    let text = match (&r.body, &r.content_sid) {
        (Some(b), _) => b.clone(),
        (None, Some(sid)) => {
            let vars = r
                .content_variables
                .iter()
                .map(|(k, v)| format!("{{{{{k}}}}} = {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("template {sid} ({vars})")
        }
        (None, None) => r
            .payload
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    };
    view! {
        <div class="rendered" data-testid="rendered">
            <small class="muted">{format!("to {}{}", r.to, if r.in_session_window { " · inside the 24-hour window" } else { "" })}</small>
            <blockquote>{text}</blockquote>
        </div>
    }
}

/// One automation (`/automations/:id`): its definition, switch and dry run.
#[component]
pub fn AutomationDetail() -> impl IntoView {
    let session = use_session();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    let automation = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<AutomationView>(&format!("/automations/{id}")).await }
    });
    let dry = RwSignal::new(None::<Result<DryRun, ApiError>>);
    let running = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    let dry_run = move |_| {
        let id = id.get_untracked();
        running.set(true);
        leptos::task::spawn_local(async move {
            let body = DryRunRequest {
                spec: None,
                profile_id: None,
                limit: Some(20),
            };
            dry.set(Some(
                api::post::<_, DryRun>(&format!("/automations/{id}/dry-run"), &body).await,
            ));
            running.set(false);
        });
    };
    view! {
        {loaded(automation, move |a: AutomationView| {
            let enabled = RwSignal::new(a.enabled);
            let aid = a.id;
            let toggle = move |_| {
                let to = !enabled.get_untracked();
                leptos::task::spawn_local(async move {
                    match switch(aid, to).await {
                        Ok(v) => enabled.set(v.enabled),
                        Err(e) => error.set(Some(e)),
                    }
                });
            };
            let spec_json = serde_json::to_string_pretty(&a.spec).unwrap_or_default();
            let message = a.spec.actions.iter().find_map(|x| match x {
                Action::Whatsapp(m) => m.body.clone().or_else(|| m.content_sid.clone()),
                _ => None,
            });
            view! {
                <div class="page-head">
                    <div>
                        <a href="/automations">"← Automations"</a>
                        <h1 data-testid="automation-name">{a.spec.name.clone()}</h1>
                        <p class="sub">{a.spec.description.clone()}</p>
                    </div>
                    <div class="row">
                        <span data-testid="state">{move || if enabled.get() { view! { <Badge text="enabled" tone="ok"/> } } else { view! { <Badge text="disabled"/> } }}</span>
                        {session.can(Role::Analyst).then(|| view! {
                            <button type="button" class="button ghost" on:click=toggle data-testid="switch">{move || if enabled.get() { "Disable" } else { "Enable" }}</button>
                        })}
                        <a class="button ghost" href=format!("/automations/{aid}/results")>"Results"</a>
                    </div>
                </div>
                <section class="card">
                    <dl class="facts">
                        <div><dt>"Trigger"</dt><dd>{trigger_text(&a.spec.trigger)}</dd></div>
                        <div><dt>"Wait"</dt><dd>{wait_text(a.spec.wait.as_ref())}</dd></div>
                        <div><dt>"Conditions"</dt><dd>{if a.spec.conditions.is_some() { "yes (see the definition)" } else { "none" }}</dd></div>
                        <div><dt>"Actions"</dt><dd>{a.spec.actions.iter().map(action_text).collect::<Vec<_>>().join(", ")}</dd></div>
                        <div><dt>"Control group"</dt><dd>{format!("{} %", a.spec.guardrails.control_percent)}</dd></div>
                        <div><dt>"Quiet hours"</dt><dd>{format::humanize(match a.spec.guardrails.quiet_hours { QuietHours::Hold => "hold", QuietHours::Skip => "skip" })}</dd></div>
                    </dl>
                    {message.map(|m| view! { <h3>"Message"</h3><blockquote>{m}</blockquote> })}
                    <details><summary>"Definition"</summary><pre class="json">{spec_json}</pre></details>
                </section>
            }
        })}
        {move || error.get().map(|error| view! { <ErrorNotice error/> })}
        <section class="card">
            <div class="row">
                <h2>"Dry run"</h2>
                <button type="button" class="button ghost" on:click=dry_run disabled=move || running.get() data-testid="dry-run-button">"Who would get what now"</button>
            </div>
            <p class="muted">"Judges the people the trigger reaches now, as if their wait were over. Nothing is sent or recorded."</p>
            {move || dry.get().map(|d| match d {
                Ok(run) => view! { <DryRunTable run/> }.into_any(),
                Err(error) => view! { <ErrorNotice error/> }.into_any(),
            })}
        </section>
    }
}

/// An automation's results (`/automations/:id/results`).
#[component]
pub fn AutomationResultsPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    let results = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<AutomationResults>(&format!("/automations/{id}/results")).await }
    });
    let automation = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<AutomationView>(&format!("/automations/{id}")).await }
    });
    view! {
        <div class="page-head">
            <div>
                <a href=move || format!("/automations/{}", id.get())>"← Automation"</a>
                <h1>"Results"</h1>
                <p class="sub">{move || automation.get().and_then(Result::ok).map(|a| a.spec.name)}</p>
            </div>
        </div>
        {loaded(results, move |r: AutomationResults| view! { <Results r/> })}
    }
}

/// Count of `key` in a by-status map.
fn of(map: &std::collections::BTreeMap<String, i64>, keys: &[&str]) -> i64 {
    keys.iter().filter_map(|k| map.get(*k)).sum()
}

#[component]
fn Results(r: AutomationResults) -> impl IntoView {
    let sends = &r.sends_by_status;
    // A read message was delivered and sent: each figure counts those that got at least
    // that far.
    let read = of(sends, &["read"]);
    let delivered = read + of(sends, &["delivered"]);
    let sent = delivered + of(sends, &["sent", "queued"]);
    let kpis = [
        ("Sent", sent, "sent"),
        ("Delivered", delivered, "delivered"),
        ("Read", read, "read"),
        ("Failed", of(sends, &["failed"]), "failed"),
        (
            "Suppressed",
            of(sends, &["no_consent", "suppressed"]) + of(&r.runs_by_outcome, &["suppressed"]),
            "suppressed",
        ),
        ("Capped", of(sends, &["capped"]), "capped"),
        (
            "Held out",
            of(&r.runs_by_outcome, &["held_out"]),
            "held_out",
        ),
    ];
    let funnel: Vec<(String, f64, String)> = r
        .funnel
        .iter()
        .map(|s| {
            (
                format::humanize(&s.step),
                s.count as f64,
                format::count(s.count),
            )
        })
        .collect();
    let c = r.conversions.clone();
    let rate = |x: Option<f64>| x.map(format::percent).unwrap_or_else(|| "—".into());
    view! {
        <section class="kpis" data-testid="results">
            {kpis.into_iter().map(|(label, n, name)| view! {
                <Kpi label value=format::kpi_count(n) exact=format::count(n) name/>
            }).collect_view()}
        </section>
        <section class="grid two">
            <div class="card">
                <h2>"Outcome funnel"</h2>
                {if funnel.iter().all(|f| f.1 == 0.0) {
                    view! { <p class="muted" data-testid="funnel">"Nothing triggered yet."</p> }.into_any()
                } else {
                    view! { <div data-testid="funnel"><HBars label="Outcome funnel".into() rows=funnel/></div> }.into_any()
                }}
            </div>
            <div class="card table-wrap">
                <h2>"Conversions vs. control"</h2>
                <table class="table compact" data-testid="conversions">
                    <thead><tr><th></th><th class="num">"People"</th><th class="num">"Ordered"</th><th class="num">"Rate"</th></tr></thead>
                    <tbody>
                        <tr><td>"Messaged"</td><td class="num">{format::count(c.treated)}</td><td class="num">{format::count(c.treated_converted)}</td><td class="num">{rate(c.treated_rate)}</td></tr>
                        <tr><td>"Control (held out)"</td><td class="num">{format::count(c.control)}</td><td class="num">{format::count(c.control_converted)}</td><td class="num">{rate(c.control_rate)}</td></tr>
                    </tbody>
                </table>
                <p>{format!("Orders within {} hours. Uplift: {}", c.window_hours, c.uplift_points.map(|p| format!("{p:+.1} points")).unwrap_or_else(|| "not measurable yet".into()))}</p>
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_draft_is_a_valid_automation_once_named() {
        let mut d = Draft::starter();
        d.name = "Abandoned checkout".into();
        let spec = d.spec().unwrap();
        assert!(matches!(spec.trigger, Trigger::Event { .. }));
        assert!(matches!(
            spec.wait,
            Some(Wait::UntilEvent {
                timeout_seconds: 3600,
                ..
            })
        ));
        assert_eq!(spec.guardrails.control_percent, 10);
        d.wait_minutes = "soon".into();
        assert!(d.spec().is_err());
        d.wait = "none".into();
        assert!(d.spec().unwrap().wait.is_none());
        d.trigger = "audience_entered".into();
        assert_eq!(d.spec().unwrap_err(), "Choose an audience.");
        d.conditions = "{".into();
        d.trigger = "event".into();
        assert!(d.spec().unwrap_err().starts_with("Not a rule yet"));
    }
}
