//! The page a login email's magic link opens (`{portal.portal_base_url}/login?token=…`) when no
//! portal front end is deployed: one button that sends the link's token to
//! `POST /api/v1/sigma/dev/auth/email/verify`. The token is read in the browser, never echoed by
//! the server, and a GET consumes nothing: mail scanners that follow links cannot spend it.

use axum::response::{Html, IntoResponse};
use axum::routing::get;
use maud::{DOCTYPE, PreEscaped, html};

use crate::AppState;

/// Where the page is served on the API's own host.
pub const LOGIN_PAGE_PATH: &str = "/portal/login";

pub fn site_router() -> axum::Router<AppState> {
    axum::Router::new().route(LOGIN_PAGE_PATH, get(login_page))
}

const SCRIPT: &str = r#"
const token = new URLSearchParams(location.search).get("token");
const out = document.getElementById("out");
const button = document.getElementById("go");
if (!token) { button.disabled = true; out.textContent = "This link has no token: ask for a new login email."; }
button.addEventListener("click", async () => {
  button.disabled = true;
  out.textContent = "Signing in…";
  const answer = await fetch("/api/v1/sigma/dev/auth/email/verify", {
    method: "POST", headers: {"content-type": "application/json"},
    credentials: "same-origin", body: JSON.stringify({token}),
  });
  const body = await answer.json().catch(() => ({}));
  if (answer.ok) {
    out.textContent = "Signed in as " + body.email + ". The session cookie is set for the developer API; "
      + "your session token (shown once) is:\n\n" + body.token;
    document.getElementById("next").hidden = false;
  } else {
    out.textContent = (body.detail || "The sign-in failed.") + " Ask for a new login email, or use the six-digit code.";
  }
});
"#;

async fn login_page() -> impl IntoResponse {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { "Sign in to SIGMA" }
            }
            body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem" {
                h1 { "Sign in to SIGMA" }
                p { "You followed the link in your SIGMA login email. Press the button to sign in on this browser; the link works once and expires with its code." }
                button id="go" type="button" { "Sign in" }
                pre id="out" style="white-space: pre-wrap; word-break: break-all" {}
                p id="next" hidden {
                    "Next: the developer operations in the "
                    a href="/docs/#/developer" { "API explorer" }
                    "."
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    };
    (
        [
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ],
        Html(page.into_string()),
    )
}
