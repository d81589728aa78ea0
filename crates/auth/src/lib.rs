//! Credentials of every kind the server hands out or checks.
//!
//! Everything here is pure: callers pass the current time and the secret, nothing reads a
//! clock or a file, so the same functions serve the API, signaling and the TURN relay.

mod access;
mod ice;
mod join;
mod password;
mod secret;
mod token;
mod turn;

pub use access::{AccessClaims, AccessTokens, TokenError};
pub use ice::IceConfig;
pub use join::{JoinClaims, JoinGrant, JoinTokens, PublishSource, RoomGrants};
pub use password::{PasswordError, hash_password, verify_password};
pub use secret::Secret;
pub use token::{OpaqueToken, hash_token};
pub use turn::{TurnCredentials, turn_credentials, turn_password, verify_turn_username};
