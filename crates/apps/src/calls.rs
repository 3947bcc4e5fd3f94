//! What the apps' rpc handlers (`chat.`, `vote.`, `admin.`) share: who calls, reading a
//! call's `data`, encoding a result, and turning a store failure into the client's error.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use switchboard_server::error::ClientError;
use switchboard_server::protocol::ClientInfo;
use switchboard_server::rpc::Caller;

use crate::rules;
use crate::store::StoreError;

/// Who calls, read once from the token the connection presented.
pub(crate) struct Who {
    /// The user id (`sub`).
    pub(crate) id: String,
    /// The display name (the token's `info.name`, else the id).
    pub(crate) name: String,
    /// A guest (the token says so, or the id is a guest's).
    pub(crate) guest: bool,
    /// The token lists the `admin` role.
    pub(crate) admin: bool,
    caller: Caller,
}

impl Who {
    /// The caller, refused (103) when anonymous: `what` names what needs a user
    /// ("chat", "voting").
    pub(crate) fn new(caller: Caller, what: &str) -> Result<Who, ClientError> {
        if caller.is_anonymous() {
            return Err(ClientError::permission_denied(format!(
                "{what} needs a signed-in user or a guest: connect with a token"
            )));
        }
        #[derive(Deserialize, Default)]
        struct Info {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            guest: bool,
        }
        let info: Info = caller
            .info
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default();
        Ok(Who {
            id: caller.user.clone(),
            name: info.name.unwrap_or_else(|| caller.user.clone()),
            guest: info.guest || rules::is_guest(&caller.user),
            admin: caller.has_role("admin"),
            caller,
        })
    }

    /// The caller as subscribers see a publisher.
    pub(crate) fn client_info(&self) -> ClientInfo {
        ClientInfo {
            user: self.caller.user.clone(),
            client: self.caller.client.clone(),
            info: self.caller.info.clone(),
        }
    }

    /// Refuses guests (103) what needs an account.
    pub(crate) fn no_guests(&self, what: &str) -> Result<(), ClientError> {
        if self.guest {
            return Err(ClientError::permission_denied(format!(
                "{what} needs an account; guests cannot"
            )));
        }
        Ok(())
    }
}

/// A call's `data` read into `T` (absent reads as `{}`); 107 when it does not fit.
pub(crate) fn args<T: DeserializeOwned>(data: Option<Box<RawValue>>) -> Result<T, ClientError> {
    let text = data.as_ref().map_or("{}", |d| d.get());
    serde_json::from_str(text).map_err(|e| ClientError::bad_request(format!("data: {e}")))
}

/// A result as raw JSON.
pub(crate) fn raw(value: &Value) -> Result<Box<RawValue>, ClientError> {
    serde_json::value::to_raw_value(value).map_err(|e| ClientError::internal(e.to_string()))
}

/// A store failure as the client sees it: a refusal in words (119), or, for the store
/// itself failing, 100 with the cause in the log only.
pub(crate) fn store_error(err: StoreError) -> ClientError {
    match err {
        StoreError::Backend(_) => {
            tracing::error!(cause = %err, "apps store failed");
            ClientError::internal("the server failed; try again")
        }
        other => ClientError::rpc_failed(other.to_string()),
    }
}
