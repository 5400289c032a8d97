//! SharePoint admin host: the three enqueue calls, the form digest probe and user profiles.

use serde_json::Value;

use super::escape;
use super::http::{Answer, Service};
use super::profile::ProfileRead;
use super::{M365Error, TenantClient};

const PROFILE_LOADER_TYPE: &str = "{9c42543a-91b3-4902-b2fe-14ccdefb6e2b}";
const TENANT_TYPE: &str = "{268004ae-ef6b-4e9b-8425-127220d84719}";
/// Longest the client polls a `SpoOperation` before trusting it to finish on its own.
const OPERATION_POLLS: usize = 5;

/// The fix for a refused enqueue, depending on the token kind that was refused.
fn refused(credentials: &super::Credentials, detail: &str) -> M365Error {
    if credentials.app_only() {
        M365Error::TokenKindRefused(format!(
            "SharePoint refused to enqueue with an app-only ({}) token: {detail}. Fix: grant the app SharePoint Sites.FullControl.All and User.ReadWrite.All (application) with admin consent; if the tenant still refuses app-only enqueue, switch spec.auth to delegated with a SharePoint administrator's refresh token",
            credentials.kind()
        ))
    } else {
        M365Error::PermissionMissing(format!(
            "SharePoint refused the delegated token: {detail}. Fix: the refresh token must belong to a SharePoint administrator (or Global administrator) of this tenant"
        ))
    }
}

pub(super) fn odata_message(body: &Value) -> String {
    let e = if body["error"].is_object() { &body["error"] } else { &body["odata.error"] };
    let message = e["message"]["value"].as_str().or(e["message"].as_str()).unwrap_or("");
    let code = e["code"].as_str().unwrap_or("");
    // Bounded: the text comes from the network and lands in a status message.
    format!("{code} {message}").trim().chars().take(300).collect()
}

/// Sends an authenticated SharePoint request, renewing a refused token once.
/// The token's audience is the admin host itself: each geo's host needs its own token.
async fn send(
    client: &TenantClient,
    resource: &str,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Answer, M365Error> {
    for attempt in 0..2 {
        let token = client.tokens.token(resource).await?;
        let response = client.http.send(Service::SharePoint, || build(&token)).await?;
        if response.status == 401 {
            let diagnostics: String =
                response.header("x-ms-diagnostics").unwrap_or("").chars().take(200).collect();
            if response.text().contains("Unsupported app only token") {
                return Err(M365Error::TokenKindRefused(
                    "SharePoint refuses app-only tokens obtained with a client secret. Fix: authenticate the app with a certificate (spec.auth.certificate) or use workload identity".into(),
                ));
            }
            if attempt == 0 {
                client.tokens.invalidate(resource);
                continue;
            }
            return Err(M365Error::CredentialsInvalid(format!(
                "SharePoint {resource} refused the token (401 {diagnostics}). Fix: check spec.adminUrl (and spec.geos) are this tenant's admin hosts and the app is consented"
            )));
        }
        return Ok(response);
    }
    unreachable!("the loop returns")
}

pub(super) async fn enqueue_rest(
    client: &TenantClient,
    admin_url: &str,
    users: &[String],
) -> Result<(), M365Error> {
    let url = format!(
        "{admin_url}/_api/SP.UserProfiles.ProfileLoader.GetProfileLoader/CreatePersonalSiteEnqueueBulk"
    );
    let body = serde_json::json!({ "emailIDs": users });
    // With OAuth no X-RequestDigest is needed.
    let response = send(client, admin_url, |token| {
        client
            .http
            .client()
            .post(&url)
            .bearer_auth(token)
            .header("accept", "application/json;odata=nometadata")
            .json(&body)
    })
    .await?;
    let status = response.status;
    if (200..300).contains(&status) {
        return Ok(()); // the body shape is undocumented: nothing is read from it
    }
    let davext = response.header("x-msdavext_error").map(str::to_string);
    let message = odata_message(&response.json_or_null());
    if status == 403 || davext.is_some() || message.contains("UnauthorizedAccessException") {
        let detail = match davext {
            Some(d) => format!("403 X-MSDAVEXT_Error {}", d.split(';').next().unwrap_or("")),
            None => format!("{status} {message}"),
        };
        return Err(refused(client.credentials(), &detail));
    }
    if status == 400 {
        return Err(M365Error::InvalidRequest(format!("SharePoint refused the enqueue: {message}")));
    }
    Err(M365Error::Unreachable(format!("SharePoint enqueue answered {status}: {message}")))
}

pub(crate) fn csom_request(users: &[String], tenant_method: bool) -> String {
    let objects: String =
        users.iter().map(|u| format!("<Object Type=\"String\">{}</Object>", escape::xml(u))).collect();
    let params = format!("<Parameters><Parameter Type=\"Array\">{objects}</Parameter></Parameters>");
    let head = format!(
        "<Request xmlns=\"http://schemas.microsoft.com/sharepoint/clientquery/2009\" SchemaVersion=\"15.0.0.0\" LibraryVersion=\"16.0.0.0\" ApplicationName=\"onedrive-operator/{}\">",
        env!("CARGO_PKG_VERSION")
    );
    if tenant_method {
        format!(
            "{head}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><ObjectPath Id=\"4\" ObjectPathId=\"3\" /><Query Id=\"5\" ObjectPathId=\"3\"><Query SelectAllProperties=\"false\"><Properties><Property Name=\"IsComplete\" ScalarProperty=\"true\" /><Property Name=\"PollingInterval\" ScalarProperty=\"true\" /></Properties></Query></Query></Actions><ObjectPaths><Constructor Id=\"1\" TypeId=\"{TENANT_TYPE}\" /><Method Id=\"3\" ParentId=\"1\" Name=\"RequestPersonalSites\">{params}</Method></ObjectPaths></Request>"
        )
    } else {
        format!(
            "{head}<Actions><ObjectPath Id=\"2\" ObjectPathId=\"1\" /><Method Name=\"CreatePersonalSiteEnqueueBulk\" Id=\"3\" ObjectPathId=\"1\">{params}</Method></Actions><ObjectPaths><StaticMethod Id=\"1\" Name=\"GetProfileLoader\" TypeId=\"{PROFILE_LOADER_TYPE}\" /></ObjectPaths></Request>"
        )
    }
}

fn poll_request(identity: &str) -> String {
    format!(
        "<Request xmlns=\"http://schemas.microsoft.com/sharepoint/clientquery/2009\" SchemaVersion=\"15.0.0.0\" LibraryVersion=\"16.0.0.0\" ApplicationName=\"onedrive-operator\"><Actions><Query Id=\"2\" ObjectPathId=\"1\"><Query SelectAllProperties=\"false\"><Properties><Property Name=\"IsComplete\" ScalarProperty=\"true\" /><Property Name=\"PollingInterval\" ScalarProperty=\"true\" /></Properties></Query></Query></Actions><ObjectPaths><Identity Id=\"1\" Name=\"{}\" /></ObjectPaths></Request>",
        escape::xml(identity)
    )
}

/// Posts to ProcessQuery; a non-null `ErrorInfo` is a failure whatever the HTTP status.
async fn process_query(client: &TenantClient, admin_url: &str, xml: String) -> Result<Vec<Value>, M365Error> {
    let (status, body) = post_query(client, admin_url, xml).await?;
    csom_result(status, &body, client.credentials())
}

/// Posts to ProcessQuery: the HTTP status and the answer as it is (its `ErrorInfo` is the
/// caller's to read).
pub(super) async fn post_query(
    client: &TenantClient,
    admin_url: &str,
    xml: String,
) -> Result<(u16, Value), M365Error> {
    let url = format!("{admin_url}/_vti_bin/client.svc/ProcessQuery");
    let response = send(client, admin_url, |token| {
        client
            .http
            .client()
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "text/xml")
            .body(xml.clone())
    })
    .await?;
    Ok((response.status, response.json_or_null()))
}

/// Sends a request built from the HTTP client and a token for `admin_url`.
pub(super) async fn send_admin(
    client: &TenantClient,
    admin_url: &str,
    build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Result<Answer, M365Error> {
    send(client, admin_url, |token| build(client.http.client(), token)).await
}

/// What a ProcessQuery answer says: its result array, or the error its `ErrorInfo` names
/// (whatever the HTTP status: CSOM answers 200 to a refusal).
pub(super) fn csom_result(
    status: u16,
    body: &Value,
    credentials: &super::Credentials,
) -> Result<Vec<Value>, M365Error> {
    let Some(items) = body.as_array().filter(|a| !a.is_empty()) else {
        return Err(M365Error::Unreachable(format!(
            "CSOM ProcessQuery answered {status} without a result array"
        )));
    };
    let info = &items[0]["ErrorInfo"];
    if !info.is_null() {
        let kind = info["ErrorTypeName"].as_str().unwrap_or("");
        let message = info["ErrorMessage"].as_str().unwrap_or("");
        let code = info["ErrorCode"].as_i64().unwrap_or(0);
        let detail: String = format!("{kind} ({code}): {message}").chars().take(300).collect();
        return Err(
            if kind.contains("UnauthorizedAccess") || code == -2147024891 || message.contains("Access denied")
            {
                refused(credentials, &detail)
            } else if kind.contains("Argument") {
                M365Error::InvalidRequest(format!("SharePoint refused the enqueue: {detail}"))
            } else {
                M365Error::Protocol(format!("CSOM error: {detail}"))
            },
        );
    }
    Ok(items.clone())
}

pub(super) async fn enqueue_csom(
    client: &TenantClient,
    admin_url: &str,
    users: &[String],
    tenant_method: bool,
) -> Result<(), M365Error> {
    let items = process_query(client, admin_url, csom_request(users, tenant_method)).await?;
    if !tenant_method {
        return Ok(());
    }
    // RequestPersonalSites returns an SpoOperation; poll it briefly like PnP does. The sites are
    // still created by the timer job afterwards: completion here only means "accepted".
    let Some(op) =
        items.iter().find(|v| v["_ObjectType_"].as_str().is_some_and(|t| t.ends_with("SpoOperation")))
    else {
        return Ok(());
    };
    let mut op = op.clone();
    for _ in 0..OPERATION_POLLS {
        if op["IsComplete"].as_bool().unwrap_or(true) {
            return Ok(());
        }
        let interval = op["PollingInterval"].as_u64().unwrap_or(15_000).clamp(100, 15_000);
        crate::slots::sleep(std::time::Duration::from_millis(interval)).await;
        let identity = op["_ObjectIdentity_"].as_str().unwrap_or_default().to_string();
        // SharePoint already accepted the request: a failing poll must not turn it into a refusal.
        let reloaded = match process_query(client, admin_url, poll_request(&identity)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "could not poll the SpoOperation; the request was accepted");
                return Ok(());
            }
        };
        match reloaded.iter().find(|v| v.is_object() && v.get("IsComplete").is_some()) {
            Some(next) => op = next.clone(),
            None => return Ok(()),
        }
    }
    Ok(())
}

pub(super) async fn contextinfo(client: &TenantClient, admin_url: &str) -> Result<(), M365Error> {
    let url = format!("{admin_url}/_api/contextinfo");
    let response = send(client, admin_url, |token| {
        client
            .http
            .client()
            .post(&url)
            .bearer_auth(token)
            .header("accept", "application/json;odata=nometadata")
    })
    .await?;
    match response.status {
        200 => Ok(()),
        403 => Err(M365Error::PermissionMissing(
            "SharePoint refused POST /_api/contextinfo (403): the app or user has no access to the admin site".into(),
        )),
        s => Err(M365Error::Unreachable(format!("SharePoint /_api/contextinfo answered {s}"))),
    }
}

/// The user's profile at `admin_url`, their geo's admin host (each geo has its own profiles).
pub(super) async fn profile(
    client: &TenantClient,
    admin_url: &str,
    user: &str,
) -> Result<Option<ProfileRead>, M365Error> {
    let url = format!("{admin_url}/_api/SP.UserProfiles.PeopleManager/GetPropertiesFor(accountName=@v)");
    let account = profile_account(user);
    let response = send(client, admin_url, |token| {
        client
            .http
            .client()
            .get(&url)
            .query(&[("@v", account.as_str())])
            .bearer_auth(token)
            .header("accept", "application/json;odata=nometadata")
    })
    .await?;
    let status = response.status;
    if status != 200 {
        return Err(M365Error::Unreachable(format!("SharePoint profile read answered {status}")));
    }
    Ok(ProfileRead::from_body(&response.json()?))
}

/// The `@v` alias of a profile read: the claims-encoded account name as an OData literal.
pub(crate) fn profile_account(user: &str) -> String {
    escape::odata_literal(&format!("i:0#.f|membership|{}", user.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csom_requests_escape_emails() {
        let xml = csom_request(&["o'neil&co<x>@contoso.com".into()], false);
        assert!(xml.contains("<Object Type=\"String\">o&apos;neil&amp;co&lt;x&gt;@contoso.com</Object>"));
        assert!(xml.contains(PROFILE_LOADER_TYPE));
        assert!(csom_request(&["a@b.c".into()], true).contains("RequestPersonalSites"));
    }
}
