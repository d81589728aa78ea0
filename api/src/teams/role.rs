use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// A member's role in a team, in increasing order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Guest,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guest => "guest",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "guest" => Ok(Self::Guest),
            "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            other => Err(ApiError::Internal(format!("unknown role in database: {other}"))),
        }
    }

    /// Admins and owners manage members and invites.
    pub fn can_manage(self) -> bool {
        self >= Self::Admin
    }
}
