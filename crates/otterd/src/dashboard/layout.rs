//! What the base template (`templates/dashboard/base.html`) shows around every page.

use super::session::SignedIn;
use crate::auth::Role;

/// The dashboard's sections, one per nav entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Releases,
    Devices,
    Rollouts,
    Keys,
    Tokens,
    People,
    Audit,
    /// A page outside the nav (sign-in, password change).
    None,
}

/// The nav, in order: (section, link, label, admins only).
const NAV: &[(Section, &str, &str, bool)] = &[
    (Section::Overview, "/ui/", "Overview", false),
    (Section::Releases, "/ui/releases", "Releases", false),
    (Section::Devices, "/ui/devices", "Devices", false),
    (Section::Rollouts, "/ui/rollouts", "Rollouts", false),
    (Section::Keys, "/ui/keys", "Keys", false),
    (Section::Tokens, "/ui/tokens", "Tokens", true),
    (Section::People, "/ui/people", "People", true),
    // The audit log is for admins, as `GET /api/v1/audit` is.
    (Section::Audit, "/ui/audit", "Audit", true),
];

/// One nav entry.
#[derive(Debug, Clone)]
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    /// The page shown is in this section (`aria-current="page"`).
    pub current: bool,
}

/// The person signed in, as the header shows them.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub role: &'static str,
}

/// What the base template needs; every page template has it as `layout`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The page's title (the `<title>` adds "· Otter").
    pub title: String,
    pub section: Section,
    /// `None` on pages for people not signed in (no nav, no sign-out).
    pub who: Option<Who>,
    /// The session's CSRF token, for the sign-out form (and any form of the page:
    /// `<input type="hidden" name="csrf" value="{{ layout.csrf }}">`).
    pub csrf: String,
    pub nav: Vec<NavLink>,
}

impl Layout {
    /// The layout of a page for a signed-in person: the nav shows the sections their role may
    /// see.
    pub fn new(title: impl Into<String>, section: Section, who: &SignedIn) -> Layout {
        let admin = who.principal.role == Role::Admin;
        Layout {
            title: title.into(),
            section,
            who: Some(Who {
                name: who.person.name.clone(),
                role: who.principal.role.as_str(),
            }),
            csrf: who.csrf.clone(),
            nav: NAV
                .iter()
                .filter(|(_, _, _, admins)| admin || !admins)
                .map(|(s, href, label, _)| NavLink {
                    href,
                    label,
                    current: *s == section,
                })
                .collect(),
        }
    }

    /// The layout of a page for people not signed in (sign-in).
    pub fn public(title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            section: Section::None,
            who: None,
            csrf: String::new(),
            nav: Vec::new(),
        }
    }
}
