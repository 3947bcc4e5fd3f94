//! Where the agent's token comes from.

use std::sync::Arc;

/// The token the agent connects with: given (the command line, the environment), or
/// minted afresh for each connection (an agent inside the server, which holds the key).
/// Its `Debug` never shows it: tokens stay out of logs.
#[derive(Clone)]
pub enum Token {
    /// A token as given.
    Fixed(String),
    /// Called before each connection, so an agent that outlives a token's lifetime gets
    /// a new one when the old one's expiry closes the connection (4002).
    Mint(Arc<dyn Fn() -> String + Send + Sync>),
}

impl Token {
    /// The token to connect with now.
    pub fn get(&self) -> String {
        match self {
            Token::Fixed(token) => token.clone(),
            Token::Mint(mint) => mint(),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Fixed(_) => f.write_str("Token::Fixed(…)"),
            Token::Mint(_) => f.write_str("Token::Mint(…)"),
        }
    }
}
