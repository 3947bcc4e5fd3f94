//! Integration tests of the apps (placeholder until the server façade lands).
