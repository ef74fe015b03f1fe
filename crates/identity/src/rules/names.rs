//! The name guard's vocabulary: which first name an event states, how two first names
//! are compared, and which names a profile remembers.
//!
//! Family members type one phone number and share one computer; their first names on
//! orders and forms tell them apart. A name is reduced to a key (first word, letters
//! only, lower case) and two keys *agree* when they are equal, one is a prefix of the
//! other (`raj` / `rajesh`), or, in names of five letters or more, one typo apart.
//! WhatsApp display names are self-chosen ("Mom", emoji) and never count. A profile
//! remembers the first few names that agree with what it already holds, so a name
//! seen once on a shared device cannot drift the profile towards someone else.

use std::collections::BTreeSet;

use domain::Channel;

/// Most first names a profile remembers.
pub const MAX_NAMES: usize = 4;

/// The first name an event states for its person, as a comparison key.
///
/// Read from `first_name`, else the first word of `name`. WhatsApp profile names are
/// self-chosen display names ("Mom", emoji) and never count; the normaliser stores
/// them as `whatsapp_profile_name`, and this function also ignores any name on a
/// WhatsApp event.
pub fn person_name(
    channel: Channel,
    traits: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    if channel == Channel::Whatsapp {
        return None;
    }
    let text = |k: &str| traits.get(k).and_then(|v| v.as_str());
    // `firstName` is the Segment spec's trait, which the tracking API keeps as sent.
    let raw = text("first_name")
        .or_else(|| text("firstName"))
        .or_else(|| text("name"))?;
    name_key(raw)
}

/// Normalises a first name for comparison: the first word, letters only, lower case.
/// Names shorter than two letters say nothing and give `None`.
pub fn name_key(raw: &str) -> Option<String> {
    let word = raw.split_whitespace().next()?;
    let key: String = word
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    (key.chars().count() >= 2).then_some(key)
}

/// Whether two name keys may belong to one person: equal, one a prefix of the other
/// (`raj` / `rajesh`), or one typo apart in names of five letters or more.
pub fn names_compatible(a: &str, b: &str) -> bool {
    if a == b || a.starts_with(b) || b.starts_with(a) {
        return true;
    }
    let (la, lb) = (a.chars().count(), b.chars().count());
    la.min(lb) >= 5 && la.abs_diff(lb) <= 1 && edit_distance(a, b) <= 1
}

/// Whether `name` fits a person known by `names`: they know no name yet, or one of
/// them agrees with it.
pub fn name_fits<'a>(names: impl IntoIterator<Item = &'a str>, name: &str) -> bool {
    let mut names = names.into_iter().peekable();
    names.peek().is_none() || names.any(|n| names_compatible(n, name))
}

/// Adds an event's name to the names a profile remembers, if it fits them and there
/// is room.
pub fn remember_name(names: &mut BTreeSet<String>, name: &str) {
    if names.len() < MAX_NAMES && name_fits(names.iter().map(String::as_str), name) {
        names.insert(name.to_owned());
    }
}

/// Adds an absorbed profile's names to the survivor's, while there is room.
pub fn remember_names(names: &mut BTreeSet<String>, absorbed: BTreeSet<String>) {
    for n in absorbed {
        if names.len() < MAX_NAMES {
            names.insert(n);
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_keyed_by_their_first_word() {
        assert_eq!(name_key("  Priya  Sharma"), Some("priya".into()));
        assert_eq!(name_key("J."), None, "one letter says nothing");
        assert_eq!(name_key(""), None);
        assert_eq!(name_key("Ó'Brien"), Some("óbrien".into()));
        assert_eq!(name_key("ANJALI"), Some("anjali".into()));
    }

    #[test]
    fn names_are_compared_leniently() {
        assert!(names_compatible("priya", "priya"));
        assert!(names_compatible("raj", "rajesh"), "a shortened name");
        assert!(names_compatible("rajesh", "raj"), "either way round");
        assert!(
            names_compatible("priyanka", "priyaka"),
            "one letter dropped"
        );
        assert!(
            names_compatible("priyanka", "priyanke"),
            "one letter changed"
        );
        assert!(
            !names_compatible("priyanka", "priyanak"),
            "a transposition is two edits"
        );
        assert!(!names_compatible("priya", "rahul"));
        assert!(
            !names_compatible("anil", "amil"),
            "short names must match exactly"
        );
        assert!(
            !names_compatible("sunil", "sunita"),
            "two edits is another name"
        );
    }

    #[test]
    fn whatsapp_names_never_count() {
        let traits = json!({"first_name": "Asha", "name": "Asha Rao"});
        let traits = traits.as_object().unwrap();
        assert_eq!(person_name(Channel::Web, traits), Some("asha".into()));
        assert_eq!(person_name(Channel::Whatsapp, traits), None);
        let only_name = json!({"name": "Ravi Kumar"});
        assert_eq!(
            person_name(Channel::Pos, only_name.as_object().unwrap()),
            Some("ravi".into())
        );
        let profile_name = json!({"whatsapp_profile_name": "Mom"});
        assert_eq!(
            person_name(Channel::Web, profile_name.as_object().unwrap()),
            None
        );
    }

    #[test]
    fn segment_spec_first_names_count() {
        // The tracking API keeps SDK traits as sent: `firstName` in the Segment spec.
        let traits = json!({"firstName": "Meera", "lastName": "S"});
        assert_eq!(
            person_name(Channel::Web, traits.as_object().unwrap()),
            Some("meera".into())
        );
    }

    #[test]
    fn a_name_fits_an_unnamed_person_or_an_agreeing_one() {
        assert!(name_fits([], "asha"));
        assert!(name_fits(["ravi", "asha"], "asha"));
        assert!(name_fits(["rajesh"], "raj"));
        assert!(!name_fits(["ravi"], "asha"));
    }

    #[test]
    fn a_profile_remembers_agreeing_names_up_to_the_limit() {
        let mut names = BTreeSet::new();
        remember_name(&mut names, "rajesh");
        remember_name(&mut names, "priya");
        assert_eq!(
            names,
            ["rajesh".to_owned()].into(),
            "a clashing name is not kept"
        );
        for n in ["raj", "raje", "rajes", "rajeshh"] {
            remember_name(&mut names, n);
        }
        assert_eq!(names.len(), MAX_NAMES, "at most {MAX_NAMES} names");
        assert!(!names.contains("rajeshh"));

        // A merge brings the absorbed profile's names while there is room.
        let mut survivor: BTreeSet<String> = ["asha".to_owned()].into();
        remember_names(
            &mut survivor,
            ["ravi", "meena", "anil", "sunil"].map(str::to_owned).into(),
        );
        assert_eq!(survivor.len(), MAX_NAMES);
        assert!(survivor.contains("asha"));
    }
}
