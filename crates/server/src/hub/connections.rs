//! Every open connection, connected or not, so that shutdown reaches them all.

use std::collections::HashMap;
use std::sync::MutexGuard;

use switchboard_ws::CloseCode;

use super::Hub;
use crate::outbox::ClientHandle;

impl Hub {
    /// Registers an open connection (see [`Hub::disconnect_all`]).
    pub(crate) fn register(&self, handle: &ClientHandle) {
        self.open_connections().insert(handle.id, handle.clone());
    }

    /// Forgets a closed connection.
    pub(crate) fn unregister(&self, id: u64) {
        self.open_connections().remove(&id);
    }

    fn open_connections(&self) -> MutexGuard<'_, HashMap<u64, ClientHandle>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every open connection (shutdown).
    pub(crate) fn disconnect_all(&self, code: CloseCode, reason: &str) {
        for handle in self.open_connections().values() {
            handle.disconnect(code, reason);
        }
    }
}
